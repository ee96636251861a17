// The Go peer of vitte's async benchmarks (bench/async/bench_*.c): goroutines
// where vitte has fibers. Each run is one repetition, started by the C
// benchmark as a subprocess so that its repetitions interleave with vitte's:
//
//	vitte_async_go yield       -n N -threads T   two goroutines, each calling runtime.Gosched N times
//	vitte_async_go spawn_join  -n M -threads T   M times: go func, then receive its result
//	vitte_async_go fibers      -n N -threads T   N goroutines left blocked on a channel
//
// -threads is GOMAXPROCS. Each run first does the same work once untimed
// (fibers: no warm-up, its process must start clean), then prints one line of
// key=value figures, ns= being the one the C side reports as median_ns:
//
//	yield:       ns per Gosched, cpu_ns= the process's CPU time per Gosched
//	spawn_join:  ns per goroutine started and joined, cpu_ns= likewise
//	fibers:      ns per goroutine from the first go statement until all are
//	             blocked, spawn_ns= for the go statements alone, bytes= of RSS
//	             per blocked goroutine (/proc/self/statm, before and after)
//
// A wrong result exits with status 1 and a message on stderr.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "vitte_async_go: "+format+"\n", args...)
	os.Exit(1)
}

// CPU time of the whole process (every thread of the Go runtime), ns.
func cpuNs() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fail("getrusage: %v", err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func yieldOnce(n int) time.Duration {
	var wg sync.WaitGroup
	var calls int64
	start := time.Now()
	wg.Add(2)
	for k := 0; k < 2; k++ {
		go func() {
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
			atomic.AddInt64(&calls, int64(n))
			wg.Done()
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if calls != 2*int64(n) {
		fail("yield: %d calls, expected %d", calls, 2*n)
	}
	return d
}

func spawnJoinOnce(m int) time.Duration {
	// One unbuffered channel, reused: each goroutine hands back a value, as a
	// vitte fiber returns one to vt_fiber_await, and the join allocates
	// nothing of its own.
	ch := make(chan int)
	sum := 0
	start := time.Now()
	for i := 0; i < m; i++ {
		go func(v int) { ch <- v + 1 }(i)
		sum += <-ch
	}
	d := time.Since(start)
	if want := m * (m + 1) / 2; sum != want {
		fail("spawn_join: sum %d, expected %d", sum, want)
	}
	return d
}

// Resident bytes of this process, as the C benchmark reads its own.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		fail("statm: %v", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		fail("statm: %q", b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		fail("statm: %v", err)
	}
	return pages * int64(os.Getpagesize())
}

func fibers(n int) {
	gate := make(chan struct{})
	var blocked, woken int64
	var wg sync.WaitGroup
	runtime.GC()
	before := rss()
	start := time.Now()
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			atomic.AddInt64(&blocked, 1)
			<-gate
			atomic.AddInt64(&woken, 1)
			wg.Done()
		}()
	}
	spawned := time.Since(start)
	// Gosched puts the caller behind every runnable goroutine: when it
	// returns with all counted, each has run up to its receive and parked.
	for atomic.LoadInt64(&blocked) < int64(n) {
		runtime.Gosched()
	}
	ready := time.Since(start)
	after := rss()
	close(gate)
	wg.Wait()
	if woken != int64(n) {
		fail("fibers: %d woken, expected %d", woken, n)
	}
	fmt.Printf("ns=%.3f spawn_ns=%.3f bytes=%.1f rss_before=%d rss_after=%d go=%s\n",
		float64(ready.Nanoseconds())/float64(n), float64(spawned.Nanoseconds())/float64(n),
		float64(after-before)/float64(n), before, after, runtime.Version())
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: vitte_async_go yield|spawn_join|fibers [-n N] [-threads T]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	n := fs.Int("n", 1000000, "iterations or goroutines")
	threads := fs.Int("threads", 1, "GOMAXPROCS")
	fs.Parse(os.Args[2:])
	if *n < 1 || *threads < 1 {
		fail("-n and -threads must be at least 1")
	}
	runtime.GOMAXPROCS(*threads)
	switch os.Args[1] {
	case "yield":
		yieldOnce(*n)
		c0 := cpuNs()
		d := yieldOnce(*n)
		c1 := cpuNs()
		ops := float64(2 * *n)
		fmt.Printf("ns=%.3f cpu_ns=%.3f go=%s\n", float64(d.Nanoseconds())/ops,
			float64(c1-c0)/ops, runtime.Version())
	case "spawn_join":
		spawnJoinOnce(*n)
		c0 := cpuNs()
		d := spawnJoinOnce(*n)
		c1 := cpuNs()
		ops := float64(*n)
		fmt.Printf("ns=%.3f cpu_ns=%.3f go=%s\n", float64(d.Nanoseconds())/ops,
			float64(c1-c0)/ops, runtime.Version())
	case "fibers":
		fibers(*n)
	default:
		fail("unknown benchmark %q", os.Args[1])
	}
}
