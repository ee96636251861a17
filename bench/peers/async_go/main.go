// The Go peer of vitte's async benchmarks (bench/async/bench_*.c): goroutines
// where vitte has fibers. Each run is one repetition, started by the C
// benchmark as a subprocess so that its repetitions interleave with vitte's:
//
//	vitte_async_go yield       -n N -threads T   two goroutines, each calling runtime.Gosched N times
//	vitte_async_go spawn_join  -n M -threads T   M times: go func, then receive its result
//	vitte_async_go fibers      -n N -threads T   N goroutines left blocked on a channel
//	vitte_async_go chan_pingpong -n N -threads T  N round trips over two unbuffered channels
//	vitte_async_go chan_spsc   -n N -threads T   N ints, one producer, a channel of 1024
//	vitte_async_go chan_mpsc4  -n N -threads T   N ints, four producers, one channel of 1024
//	vitte_async_go chan_select4 -n N -threads T  N ints, four producers with a channel of
//	                                             1024 each, received by a select
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
//	chan_*:      ns per round trip (pingpong) or per message, cpu_ns= likewise;
//	             as bench/async/bench_chan.c: timed from when every goroutine
//	             has been started until the last receive, producer p of P
//	             sends i*P + p and the receiver checks each one's order
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

// The channels of the chan_* benchmarks hold this many elements.
const chanCap = 1024

func chanPingPong(n int) time.Duration {
	ping, pong := make(chan int64), make(chan int64)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
	}()
	var sum int64
	start := time.Now()
	for i := int64(0); i < int64(n); i++ {
		ping <- i
		v := <-pong
		if v != i+1 {
			fail("chan_pingpong: round trip %d answered %d", i, v)
		}
		sum += v
	}
	d := time.Since(start)
	close(ping)
	if m := int64(n); sum != m*(m+1)/2 {
		fail("chan_pingpong: sum %d, expected %d", sum, m*(m+1)/2)
	}
	return d
}

func chanCheck(name string, count, sum int64, n int) {
	if m := int64(n); count != m || sum != m*(m-1)/2 {
		fail("%s: received %d elements summing to %d, expected %d and %d", name, count, sum,
			m, m*(m-1)/2)
	}
}

func chanSPSC(n int) time.Duration {
	ch := make(chan int64, chanCap)
	go func() {
		for i := int64(0); i < int64(n); i++ {
			ch <- i
		}
		close(ch)
	}()
	var count, sum int64
	start := time.Now()
	for v := range ch {
		if v != count {
			fail("chan_spsc: element %d is %d", count, v)
		}
		count++
		sum += v
	}
	d := time.Since(start)
	chanCheck("chan_spsc", count, sum, n)
	return d
}

func chanMPSC4(n int) time.Duration {
	ch := make(chan int64, chanCap)
	m := int64(n / 4)
	var live int32 = 4
	for p := int64(0); p < 4; p++ {
		go func(p int64) {
			for i := int64(0); i < m; i++ {
				ch <- i*4 + p
			}
			if atomic.AddInt32(&live, -1) == 0 {
				close(ch)
			}
		}(p)
	}
	var next [4]int64
	var count, sum int64
	start := time.Now()
	for v := range ch {
		p := v & 3
		if v>>2 != next[p] {
			fail("chan_mpsc4: element %d is %d, expected %d", count, v, next[p]*4+p)
		}
		next[p]++
		count++
		sum += v
	}
	d := time.Since(start)
	chanCheck("chan_mpsc4", count, sum, n)
	return d
}

func chanSelect4(n int) time.Duration {
	var chs [4]chan int64
	m := int64(n / 4)
	for p := range chs {
		chs[p] = make(chan int64, chanCap)
		go func(ch chan int64, p int64) {
			for i := int64(0); i < m; i++ {
				ch <- i*4 + p
			}
			close(ch)
		}(chs[p], int64(p))
	}
	c0, c1, c2, c3 := chs[0], chs[1], chs[2], chs[3]
	var next [4]int64
	var count, sum int64
	start := time.Now()
	for open := 4; open > 0; {
		var v, k int64
		var ok bool
		// A nil channel is never ready: a closed one is dropped so.
		select {
		case v, ok = <-c0:
			if k = 0; !ok {
				c0 = nil
			}
		case v, ok = <-c1:
			if k = 1; !ok {
				c1 = nil
			}
		case v, ok = <-c2:
			if k = 2; !ok {
				c2 = nil
			}
		case v, ok = <-c3:
			if k = 3; !ok {
				c3 = nil
			}
		}
		if !ok {
			open--
			continue
		}
		if v&3 != k || v>>2 != next[k] {
			fail("chan_select4: element %d from channel %d is %d, expected %d", count, k, v,
				next[k]*4+k)
		}
		next[k]++
		count++
		sum += v
	}
	d := time.Since(start)
	chanCheck("chan_select4", count, sum, n)
	return d
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: vitte_async_go yield|spawn_join|fibers|chan_pingpong|chan_spsc|chan_mpsc4|chan_select4 [-n N] [-threads T]")
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
	case "chan_pingpong", "chan_spsc", "chan_mpsc4", "chan_select4":
		run := map[string]func(int) time.Duration{
			"chan_pingpong": chanPingPong, "chan_spsc": chanSPSC,
			"chan_mpsc4": chanMPSC4, "chan_select4": chanSelect4,
		}[os.Args[1]]
		if os.Args[1] != "chan_pingpong" && os.Args[1] != "chan_spsc" && *n%4 != 0 {
			fail("%s: -n must be a multiple of 4", os.Args[1])
		}
		run(*n)
		c0 := cpuNs()
		d := run(*n)
		c1 := cpuNs()
		ops := float64(*n)
		fmt.Printf("ns=%.3f cpu_ns=%.3f go=%s\n", float64(d.Nanoseconds())/ops,
			float64(c1-c0)/ops, runtime.Version())
	default:
		fail("unknown benchmark %q", os.Args[1])
	}
}
