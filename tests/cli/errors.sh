#!/usr/bin/env bash
# A bad task file: an error that names the file, line and column, exit
# status 2, and nothing runs.
source "$(dirname "$0")/lib.bash"

# bad_file NAME PATTERN: vitte.yaml (already written) must be refused with a
# message matching PATTERN, and run nothing.
bad_file() {
    rm -f ran.log
    vt run
    expect_rc 2 "$1: exit status"
    expect_out "$2" "$1: message"
    check "$1: nothing ran" [ ! -e ran.log ]
}

new_project errors

cat >vitte.yaml <<'Y'
tasks:
  build:
    run: echo x >> ran.log
    rnu: oops
Y
bad_file "unknown key" 'vitte.yaml:4:5: .*unknown key "rnu"'

cat >vitte.yaml <<'Y'
tasks:
  build:
    run: echo x >> ran.log
    retries: many
Y
bad_file "wrong type" 'vitte.yaml:4:14: .*retries'

cat >vitte.yaml <<'Y'
tasks:
  build:
    run: echo x >> ran.log
    deps: [compile]
  compil:
    run: echo y >> ran.log
Y
bad_file "unknown dependency" 'vitte.yaml:4:.*"compile".*compil'

cat >vitte.yaml <<'Y'
tasks:
  a:
    deps: [c]
    run: echo a >> ran.log
  b:
    deps: [a]
    run: echo b >> ran.log
  c:
    deps: [b]
    run: echo c >> ran.log
  build:
    deps: [a]
Y
bad_file "cycle" 'cycle: (c -> a -> b -> c|a -> b -> c -> a|b -> c -> a -> b)'

cat >vitte.yaml <<'Y'
tasks:
  build:
    glob: src/*.c
    run: echo ${item} >> ran.log
Y
bad_file "an expansion that matches nothing" 'vitte.yaml:3:.*src/\*\.c'

cat >vitte.yaml <<'Y'
tasks:
  build:
    run: echo ${nosuchvar} >> ran.log
Y
bad_file "unknown variable" 'vitte.yaml:3:.*nosuchvar'

printf 'tasks:\n  build:\n    run: [unclosed\n' >vitte.yaml
bad_file "not YAML" 'vitte.yaml:[0-9]+:[0-9]+:'

printf 'tasks:\n  - build\n' >vitte.yaml
bad_file "tasks not a map" 'vitte.yaml:2:'

rm vitte.yaml
vt run
expect_rc 2 "no task file"
expect_out "vitte.yaml"

# Command line errors.
printf 'tasks:\n  build:\n    run: echo x >> ran.log\n' >vitte.yaml
vt run -j 0
expect_rc 2 "-j 0"
vt run --frobnicate
expect_rc 2 "unknown option"
expect_out "unknown option --frobnicate"
vt frobnicate
expect_rc 2 "unknown command"
check "nothing ran after bad command lines" [ ! -e ran.log ]

finish
