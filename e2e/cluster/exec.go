package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// run executes a short command and returns its error with stderr attached.
func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

// output executes a short command and returns its stdout.
func output(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// proc is one long-running child process whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// procSpec says how to start a proc.
type procSpec struct {
	Name  string   // for messages and the pid file
	Argv  []string // program and arguments
	Env   []string // full environment; nil inherits
	Dir   string   // working directory
	Log   string   // file that receives stdout and stderr (appended)
	Netns string   // network namespace to run in ("" = the caller's)
	Pids  string   // folder for the pid file, "" for none
}

// startProc starts the process in its own process group. The child is killed
// if the supervisor dies (Pdeathsig), so a crash leaves no orphans running.
func startProc(spec procSpec) (*proc, error) {
	argv := spec.Argv
	if spec.Netns != "" {
		argv = append([]string{"ip", "netns", "exec", spec.Netns}, argv...)
	}
	if err := os.MkdirAll(filepath.Dir(spec.Log), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(spec.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = spec.Env
	cmd.Dir = spec.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("starting %s: %w", spec.Name, err)
	}
	p := &proc{name: spec.Name, cmd: cmd, done: make(chan struct{})}
	pidFile := ""
	if spec.Pids != "" {
		pidFile = filepath.Join(spec.Pids, spec.Name+".pid")
		_ = os.MkdirAll(spec.Pids, 0o755)
		_ = os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	}
	go func() {
		err := cmd.Wait()
		_ = logf.Close()
		if pidFile != "" {
			_ = os.Remove(pidFile)
		}
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and how.
func (p *proc) Exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// ExitCode is the exit status once the process has ended (-1 if killed).
func (p *proc) ExitCode() int {
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Stop sends SIGTERM to the process group, waits up to grace, then kills it.
func (p *proc) Stop(grace time.Duration) {
	if done, _ := p.Exited(); done {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// killPidFiles kills every process named by a pid file in dir (left by a
// supervisor that crashed) and removes the files.
func killPidFiles(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		f := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(f)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = os.Remove(f)
	}
}

// alive reports whether a process with this pid runs. A zombie (dead but
// not yet reaped by its parent) does not count.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return false
		}
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Alive reports whether pid runs (zombies excluded).
func Alive(pid int) bool { return alive(pid) }
