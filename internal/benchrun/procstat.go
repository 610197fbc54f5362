package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// rssSampler records the peak VmRSS of a process, read from /proc every
// interval while a scenario runs. (VmHWM would be the peak over the whole
// life of the process, not of one scenario.)
type rssSampler struct {
	pid      int
	interval time.Duration
	stopc    chan struct{}
	wg       sync.WaitGroup

	mu       sync.Mutex
	start    time.Time
	peak     rss // the sample with the highest VmRSS
	peakAnon int64
	samples  int
	// perSecond is the highest VmRSS of each second since start, and
	// anonPerSecond the highest RssAnon: growth of the first alone is the
	// store's memory map growing with its file; growth of the second (heap,
	// stacks) over a long run would be a leak.
	perSecond     []int64
	anonPerSecond []int64
}

// rss is one sample, in bytes: VmRSS is RssAnon (heap, stacks) + RssFile
// (mapped files: the binary, bbolt's mmap of the database) + RssShmem.
type rss struct {
	Total, Anon, File int64
}

func startRSS(pid int, interval time.Duration) *rssSampler {
	r := &rssSampler{pid: pid, interval: interval, stopc: make(chan struct{}), start: time.Now()}
	r.sample()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-r.stopc:
				return
			case <-t.C:
				r.sample()
			}
		}
	}()
	return r
}

func (r *rssSampler) sample() {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.pid))
	if err != nil {
		return // the process exited; the caller notices
	}
	var v rss
	var err1, err2, err3 error
	v.Total, err1 = statusField(b, "VmRSS")
	v.Anon, err2 = statusField(b, "RssAnon")
	v.File, err3 = statusField(b, "RssFile")
	if err1 != nil || err2 != nil || err3 != nil {
		return
	}
	r.mu.Lock()
	if v.Total > r.peak.Total {
		r.peak = v
	}
	r.peakAnon = max(r.peakAnon, v.Anon)
	r.samples++
	sec := int(time.Since(r.start) / time.Second)
	for len(r.perSecond) <= sec {
		r.perSecond = append(r.perSecond, 0)
		r.anonPerSecond = append(r.anonPerSecond, 0)
	}
	r.perSecond[sec] = max(r.perSecond[sec], v.Total)
	r.anonPerSecond[sec] = max(r.anonPerSecond[sec], v.Anon)
	r.mu.Unlock()
}

// rssStats is what a sampler saw.
type rssStats struct {
	peak          rss   // the sample with the highest VmRSS
	peakAnon      int64 // the highest RssAnon, maybe of another sample
	samples       int
	perSecond     []int64 // the highest VmRSS of each second
	anonPerSecond []int64 // the highest RssAnon of each second
}

// stop takes a last sample and returns what the sampler saw.
func (r *rssSampler) stop() rssStats {
	close(r.stopc)
	r.wg.Wait()
	r.sample()
	r.mu.Lock()
	defer r.mu.Unlock()
	return rssStats{peak: r.peak, peakAnon: r.peakAnon, samples: r.samples, perSecond: r.perSecond, anonPerSecond: r.anonPerSecond}
}

func statusField(status []byte, name string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != name {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s: unexpected %q", name, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return n << 10, nil
	}
	return 0, fmt.Errorf("no %s in /proc/<pid>/status", name)
}

// clockTick is USER_HZ, the unit of /proc CPU times: 100 on every Linux
// architecture Go supports.
const clockTick = 100

// procCPU returns the user+system CPU time a process has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after its closing
	// parenthesis are plain: utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// machineBusy returns the CPU time all CPUs spent busy (not idle or waiting
// for I/O) since boot, from /proc/stat.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	// user nice system idle iowait irq softirq steal: all but idle and iowait.
	for i, v := range f[1:min(len(f), 9)] {
		if i == 3 || i == 4 {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTick, nil
}
