// A raw context switch with Boost.Context's fcontext (jump_fcontext /
// make_fcontext, the assembly under boost::context::callcc and Boost.Fiber):
// the same ping-pong as vitte's vt__ctx_switch in bench/async/bench_switch.c,
// a value passed each way so neither side can be skipped.
#include <boost/context/detail/fcontext.hpp>

#include <cstdint>
#include <cstdlib>

#include "async_peers.h"

namespace fc = boost::context::detail;

static fc::fcontext_t other; // the partner context, as it last switched away
static void *stack_mem;

static void partner(fc::transfer_t t)
{
    // Hands back one more than it was given, for ever: the benchmark only
    // ever switches in and out, and the stack lives as long as the process.
    for (;;)
        t = fc::jump_fcontext(t.fctx,
                              reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(t.data) + 1));
}

extern "C" int peer_switch_boost_prepare(size_t stack_size)
{
    if (other)
        return 0;
    stack_mem = std::malloc(stack_size);
    if (!stack_mem)
        return -1;
    // make_fcontext takes the top of the stack: it grows down on every
    // architecture Boost.Context supports here.
    other = fc::make_fcontext(static_cast<char *>(stack_mem) + stack_size, stack_size, partner);
    return other ? 0 : -1;
}

extern "C" unsigned long peer_switch_boost_run(unsigned long round_trips)
{
    uintptr_t v = 0;
    for (unsigned long i = 0; i < round_trips; i++) {
        fc::transfer_t t = fc::jump_fcontext(other, reinterpret_cast<void *>(v));
        other = t.fctx;
        v = reinterpret_cast<uintptr_t>(t.data);
    }
    return static_cast<unsigned long>(v);
}
