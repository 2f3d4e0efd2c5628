package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// machine describes where the numbers came from.
type machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryGB  string `json:"memory"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	HAProxy   string `json:"haproxy"`
	Nginx     string `json:"nginx"`
	LoadStart string `json:"loadStart"`
	LoadEnd   string `json:"loadEnd"`
}

func describeMachine() machine {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				m.MemoryGB = strings.TrimSpace(v)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("haproxy", "-v").CombinedOutput(); err == nil {
		m.HAProxy = firstLine(string(out))
	}
	if out, err := exec.Command("nginx", "-v").CombinedOutput(); err == nil {
		m.Nginx = firstLine(string(out))
	}
	return m
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// loadAvg is the 1, 5 and 15 minute load average: the benchmark shares the
// machine, and this says how much.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
