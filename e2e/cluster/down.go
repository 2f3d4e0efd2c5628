package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/e2e/toolchain"
)

// Stop asks a running supervisor to tear the cluster down and waits for it,
// then removes whatever a crashed one left behind. It returns what it
// removed, one item per line, for the user.
func Stop(ctx context.Context, stateDir string) ([]string, error) {
	var removed []string
	st, err := ReadStatus(stateDir)
	if err != nil {
		return nil, err
	}
	if st.Alive() {
		_ = syscall.Kill(st.PID, syscall.SIGTERM)
		deadline := time.Now().Add(90 * time.Second)
		for alive(st.PID) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		if alive(st.PID) {
			_ = syscall.Kill(st.PID, syscall.SIGKILL)
			removed = append(removed, fmt.Sprintf("supervisor %d (killed after 90s)", st.PID))
		} else {
			removed = append(removed, fmt.Sprintf("supervisor %d", st.PID))
		}
	}
	more, err := Cleanup(ctx, stateDir)
	return append(removed, more...), err
}

// Cleanup removes every trace of a cluster on this machine: processes named
// by pid files, processes inside the cluster's namespaces, the namespaces,
// the links, /etc/netns entries and the state folder (logs are kept). It is
// idempotent and safe to run when nothing is there.
func Cleanup(ctx context.Context, stateDir string) ([]string, error) {
	var removed []string
	killPidFiles(filepath.Join(stateDir, "pids"))
	if NeedsSandbox() {
		// Without root the cluster only ever lived in a sandbox, which
		// vanished with its supervisor; only its processes and files remain
		// to check.
		removed = append(removed, killProcesses(stateDir)...)
		removeState(stateDir)
		return removed, nil
	}
	nss, err := Namespaces(ctx)
	if err != nil {
		return removed, err
	}
	// Pods first, then nodes: a pod's veth lives in its node's namespace.
	for _, pass := range []string{prefix + "p-", prefix + "-node-"} {
		for _, ns := range nss {
			if !strings.HasPrefix(ns, pass) {
				continue
			}
			killNetns(ctx, ns)
			if err := run(ctx, "ip", "netns", "del", ns); err != nil {
				return removed, err
			}
			removed = append(removed, "netns "+ns)
		}
	}
	links, err := Links(ctx)
	if err != nil {
		return removed, err
	}
	for _, l := range links {
		if err := run(ctx, "ip", "link", "del", l); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			return removed, err
		}
		removed = append(removed, "link "+l)
	}
	ents, _ := os.ReadDir("/etc/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			_ = os.RemoveAll(filepath.Join("/etc/netns", e.Name()))
		}
	}
	removed = append(removed, killProcesses(stateDir)...)
	removeState(stateDir)
	return removed, nil
}

// killProcesses kills what Processes lists and says what it killed.
func killProcesses(stateDir string) []string {
	var killed []string
	for _, p := range Processes(stateDir) {
		_ = syscall.Kill(p, syscall.SIGKILL)
		killed = append(killed, fmt.Sprintf("process %d", p))
	}
	return killed
}

// removeState deletes the cluster's files, keeping its logs.
func removeState(stateDir string) {
	for _, d := range []string{"pods", "etcd", "pki", "pids", "sandbox"} {
		_ = os.RemoveAll(filepath.Join(stateDir, d))
	}
	for _, f := range []string{"status.json", "admin.kubeconfig", "controller-manager.kubeconfig", "scheduler.kubeconfig", "kube-proxy.kubeconfig"} {
		_ = os.Remove(filepath.Join(stateDir, f))
	}
}

// Namespaces lists the network namespaces the cluster owns.
func Namespaces(ctx context.Context) ([]string, error) {
	out, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var nss []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			nss = append(nss, f[0])
		}
	}
	return nss, nil
}

// Links lists the root-namespace links the cluster owns.
func Links(ctx context.Context) ([]string, error) {
	out, err := output(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return nil, err
	}
	var links []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[1], ":")
		name, _, _ = strings.Cut(name, "@")
		if strings.HasPrefix(name, prefix) {
			links = append(links, name)
		}
	}
	return links, nil
}

// Processes lists the running processes of the cluster whose state is in
// stateDir: those whose executable is one of the cluster's binaries (in the
// Trellis cache) and whose command line or environment names stateDir.
func Processes(stateDir string) []int {
	self := os.Getpid()
	var pids []int
	ents, _ := os.ReadDir("/proc")
	cache := cacheRoot()
	mark := []byte(stateDir)
	if r, err := filepath.EvalSymlinks(stateDir); err == nil {
		mark = []byte(r)
	}
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == self {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		exe = strings.TrimSuffix(exe, " (deleted)")
		if !strings.HasPrefix(exe, cache+string(os.PathSeparator)) || strings.HasSuffix(exe, "/trellis-dev") {
			continue
		}
		// The same cached binaries also run other clusters (the unit tests'
		// control planes): only processes that point into this cluster's
		// state folder (flags, or a pod's KUBECONFIG) are its own.
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if bytes.Contains(cmdline, mark) || bytes.Contains(environ, mark) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// NftTables lists the nftables tables in the root namespace.
func NftTables(ctx context.Context) ([]string, error) {
	out, err := output(ctx, "nft", "list", "tables")
	if err != nil {
		return nil, err
	}
	return strings.Fields(strings.ReplaceAll(out, "table", "\n")), nil
}

func lookPath(name string) (string, error) { return exec.LookPath(name) }

// cacheRoot is the build cache with symlinks resolved, as /proc/PID/exe shows it.
func cacheRoot() string {
	d := toolchain.CacheDir()
	if r, err := filepath.EvalSymlinks(d); err == nil {
		return r
	}
	return d
}
