# Helpers for vitte's CMakeLists.txt files.

include(CheckIncludeFile)

# Defines VT_HAVE_VALGRIND_H=1 on target when <valgrind/valgrind.h> exists, so
# that fiber switches can register their stacks with Valgrind (as libdill
# does) without making Valgrind a build dependency.
function(vitte_check_valgrind_headers target)
    check_include_file("valgrind/valgrind.h" VITTE_HAVE_VALGRIND_H)
    if(VITTE_HAVE_VALGRIND_H)
        target_compile_definitions(${target} PRIVATE VT_HAVE_VALGRIND_H=1)
    endif()
endfunction()

# Sets VITTE_PC_PREFIX for vitte.pc: the prefix as seen from the .pc file
# (${pcfiledir}, which pkg-config and pkgconf expand), so an installed tree
# still works after `cmake --install --prefix`, DESTDIR or a move.
function(vitte_pkgconfig_paths)
    if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
        set(VITTE_PC_PREFIX "${CMAKE_INSTALL_PREFIX}" PARENT_SCOPE)
        return()
    endif()
    set(up "\${pcfiledir}/..")
    string(REPLACE "/" ";" parts "${CMAKE_INSTALL_LIBDIR}")
    foreach(part IN LISTS parts)
        string(APPEND up "/..")
    endforeach()
    set(VITTE_PC_PREFIX "${up}" PARENT_SCOPE)
endfunction()

# Computes a ctest TIMEOUT: base seconds x VITTE_TEST_TIMEOUT_MULT (default 1,
# may be fractional), at least one second.
function(vitte_test_timeout out base)
    set(mult "${VITTE_TEST_TIMEOUT_MULT}")
    if(NOT mult MATCHES "^[0-9]*\\.?[0-9]+$")
        set(mult 1)
    endif()
    # math() is integer-only: scale the multiplier by 1000 by hand.
    string(REGEX MATCH "^([0-9]*)\\.?([0-9]*)$" _ "${mult}")
    set(int "${CMAKE_MATCH_1}")
    set(frac "${CMAKE_MATCH_2}000")
    string(SUBSTRING "${frac}" 0 3 frac)
    if(int STREQUAL "")
        set(int 0)
    endif()
    math(EXPR t "(${base} * (${int} * 1000 + 1${frac} - 1000) + 999) / 1000")
    if(t LESS 1)
        set(t 1)
    endif()
    set(${out} ${t} PARENT_SCOPE)
endfunction()
