// Command convergence measures how fast a TrafficSplit change reaches 100
// proxy streams, and the controller's memory, at several mesh sizes. The
// controller side (the real topology, shadow planning, compile and serve
// code on a synthetic mesh) runs in a child process so that its RSS is its
// own; the simulated proxies (the real node-proxy/source.Stream client,
// which verifies every delta's hash) run in this process.
//
//	go run ./controller/bench/cmd/convergence -services 1000,5000
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/controller/bench"
)

func main() {
	role := flag.String("role", "driver", "driver, or controller (internal)")
	sizes := flag.String("services", "1000,5000", "comma-separated mesh sizes")
	nodes := flag.Int("nodes", 100, "nodes (one config each)")
	streams := flag.Int("streams", 100, "simulated proxy streams")
	changes := flag.Int("changes", 50, "TrafficSplit changes per size")
	pods := flag.Int("pods", 3, "pods per Service")
	profile = flag.String("profile", "", "directory for the controller child's CPU profile (during the changes) and heap profiles (after setup, after the changes)")
	memLimit := flag.String("controller-memlimit", "", "GOMEMLIMIT for the controller child only (e.g. 120MiB), as the Deployment sets it")
	flag.Parse()
	childEnv = os.Environ()
	if *memLimit != "" {
		childEnv = append(childEnv, "GOMEMLIMIT="+*memLimit)
	}
	if *role == "controller" {
		n, _ := strconv.Atoi(*sizes)
		controller(bench.Shape{Services: n, Nodes: *nodes, PodsPerService: *pods})
		return
	}
	fmt.Printf("| services | nodes | streams | changes | p50 all streams | p99 all streams | p50 one stream | p99 one stream | rebuild p50 | controller RSS | peak RSS |\n")
	fmt.Printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range strings.Split(*sizes, ",") {
		if err := drive(strings.TrimSpace(s), *nodes, *streams, *changes, *pods); err != nil {
			fmt.Fprintln(os.Stderr, "convergence:", err)
			os.Exit(1)
		}
	}
}

// controller serves streams and a control endpoint until stdin closes.
func controller(shape bench.Shape) {
	c := bench.NewController(shape)
	runtime.GC()
	debug.FreeOSMemory()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url, err := c.Listen(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /split", func(w http.ResponseWriter, r *http.Request) {
		k, _ := strconv.Atoi(r.URL.Query().Get("k"))
		wt, _ := strconv.Atoi(r.URL.Query().Get("w"))
		c.Mesh.SetSplit(k, int64(wt))
		d := c.Rebuild()
		reply(w, map[string]any{"versions": c.Versions(), "rebuild": d.Seconds()})
	})
	mux.HandleFunc("GET /versions", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"versions": c.Versions(), "nodes": c.Nodes()})
	})
	var cpuFile *os.File
	mux.HandleFunc("POST /profile/{what}", func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Query().Get("path")
		var err error
		switch r.PathValue("what") {
		case "cpu-start":
			if cpuFile, err = os.Create(path); err == nil {
				err = pprof.StartCPUProfile(cpuFile)
			}
		case "cpu-stop":
			pprof.StopCPUProfile()
			if cpuFile != nil {
				err = cpuFile.Close()
			}
		case "heap":
			var f *os.File
			if f, err = os.Create(path); err == nil {
				runtime.GC()
				err = errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	go func() {
		if err := http.Serve(l, mux); err != nil {
			fmt.Fprintln(os.Stderr, "control endpoint:", err)
		}
	}()
	fmt.Printf("READY %s http://%s\n", url, l.Addr())
	// Serve until the driver closes stdin (EOF is the expected end).
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(os.Stderr, "reading stdin:", err)
	}
}

func reply(w http.ResponseWriter, v any) {
	if err := json.NewEncoder(w).Encode(v); err != nil {
		fmt.Fprintln(os.Stderr, "control reply:", err)
	}
}

var (
	childEnv []string
	profile  *string
)

// prof asks the controller child for a profile when -profile is set.
func prof(ctl, what, size, name string) error {
	if *profile == "" {
		return nil
	}
	path, err := filepath.Abs(filepath.Join(*profile, size+"-"+name))
	if err != nil {
		return err
	}
	resp, err := http.Post(ctl+"/profile/"+what+"?path="+path, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: %s", what, resp.Status)
	}
	return nil
}

type answer struct {
	Versions map[string]string `json:"versions"`
	Nodes    []string          `json:"nodes"`
	Rebuild  float64           `json:"rebuild"`
}

func call(method, url string) (*answer, error) {
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var a answer
	return &a, json.NewDecoder(resp.Body).Decode(&a)
}

func drive(size string, nodes, streams, changes, pods int) error {
	cmd := exec.Command(os.Args[0], "-role=controller", "-services="+size, "-nodes="+strconv.Itoa(nodes), "-pods="+strconv.Itoa(pods))
	cmd.Stderr = os.Stderr
	cmd.Env = childEnv
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			fmt.Fprintln(os.Stderr, "controller child:", err)
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return fmt.Errorf("controller child: %w", err)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "READY" {
		return fmt.Errorf("controller child said %q", line)
	}
	streamURL, ctl := f[1], f[2]
	a, err := call("GET", ctl+"/versions")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "convergence-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, node := range a.Nodes {
		if err := os.WriteFile(filepath.Join(dir, node), []byte("token-"+node), 0o600); err != nil {
			return err
		}
	}
	tok := func(node string) string { return filepath.Join(dir, node) }
	cl := bench.StartClients(streamURL, a.Nodes, streams, tok)
	defer cl.Stop()
	if _, err := cl.Wait(a.Versions, time.Now(), 5*time.Minute); err != nil {
		return err
	}
	if err := prof(ctl, "heap", size, "heap-attached.pprof"); err != nil {
		return err
	}
	if err := prof(ctl, "cpu-start", size, "cpu.pprof"); err != nil {
		return err
	}
	var all, each, rebuild []time.Duration
	for i := 0; i < changes; i++ {
		start := time.Now()
		a, err := call("POST", fmt.Sprintf("%s/split?k=%d&w=%d", ctl, i*37, 1+i%98))
		if err != nil {
			return err
		}
		lat, err := cl.Wait(a.Versions, start, time.Minute)
		if err != nil {
			return err
		}
		all = append(all, lat[len(lat)-1])
		each = append(each, lat...)
		rebuild = append(rebuild, time.Duration(a.Rebuild*float64(time.Second)))
	}
	rss, hwm := procStatus(cmd.Process.Pid)
	if err := prof(ctl, "cpu-stop", size, ""); err != nil {
		return err
	}
	if err := prof(ctl, "heap", size, "heap-after.pprof"); err != nil {
		return err
	}
	for _, d := range [][]time.Duration{all, each, rebuild} {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	fmt.Printf("| %s | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s |\n", size, nodes, streams, changes,
		ms(bench.Percentile(all, 50)), ms(bench.Percentile(all, 99)), ms(bench.Percentile(each, 50)), ms(bench.Percentile(each, 99)),
		ms(bench.Percentile(rebuild, 50)), rss, hwm)
	return nil
}

func procStatus(pid int) (rss, hwm string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?", "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rss = mb(v)
		}
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			hwm = mb(v)
		}
	}
	return rss, hwm
}

func mb(v string) string {
	kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
	return fmt.Sprintf("%.0f MB", float64(kb)/1024)
}
