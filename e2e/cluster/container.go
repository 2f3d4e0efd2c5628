package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// container is one container of a pod: a process plus its probe state.
type container struct {
	rt     *podRuntime
	spec   corev1.Container
	binary string
	log    string

	proc          *proc
	started       time.Time
	restarts      int32
	nextStart     time.Time // back-off: do not start before
	backoff       time.Duration
	lastTerm      *corev1.ContainerStateTerminated
	waiting       string // reason while not running
	message       string
	exitedForGood bool

	ready               bool
	readyOK, readyBad   int
	liveBad             int
	nextReady, nextLive time.Time
}

const (
	backoffStart = time.Second
	backoffMax   = 20 * time.Second
	backoffReset = time.Minute
)

// step advances the container by one tick.
func (c *container) step(ctx context.Context, pod *corev1.Pod, now time.Time) {
	if c.binary == "" || c.exitedForGood {
		return
	}
	if c.proc != nil {
		if done, _ := c.proc.Exited(); done {
			c.onExit(pod, now)
		}
	}
	if c.proc == nil {
		if now.Before(c.nextStart) {
			c.waiting = "CrashLoopBackOff"
			return
		}
		if err := c.start(pod); err != nil {
			c.waiting, c.message = "CreateContainerError", err.Error()
			c.rt.k.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "container %s: %v", c.spec.Name, err)
			c.scheduleRestart(now)
			return
		}
		return
	}
	c.probe(ctx, pod, now)
}

// start launches the container's process inside the pod's namespace through
// `trellis-dev pod-init`, which mounts the volumes and execs the binary.
func (c *container) start(pod *corev1.Pod) error {
	env, err := c.rt.env(pod, &c.spec)
	if err != nil {
		return err
	}
	argv := []string{c.rt.k.self, "pod-init"}
	for _, m := range c.rt.mounts(pod, &c.spec) {
		argv = append(argv, "--mount", m)
	}
	if resolv := filepath.Join("/etc/netns", c.rt.netns, "resolv.conf"); c.rt.netns != c.rt.node.Netns && fileExists(resolv) {
		argv = append(argv, "--resolv", resolv)
	}
	argv = append(argv, "--overlay-dir", filepath.Join(c.rt.dir, "overlay", c.spec.Name))
	if c.spec.WorkingDir != "" {
		argv = append(argv, "--workdir", c.spec.WorkingDir)
	}
	argv = append(argv, "--")
	argv = append(argv, c.commandLine(env)...)
	p, err := startProc(procSpec{
		Name: c.rt.key + "/" + c.spec.Name, Argv: argv, Env: env, Log: c.log, Netns: c.rt.netns,
	})
	if err != nil {
		return err
	}
	c.proc, c.started, c.waiting, c.message = p, time.Now(), "", ""
	c.ready, c.readyOK, c.readyBad, c.liveBad = false, 0, 0, 0
	c.nextReady = c.started.Add(time.Duration(probeField(c.spec.ReadinessProbe, "delay")) * time.Second)
	c.nextLive = c.started.Add(time.Duration(probeField(c.spec.LivenessProbe, "delay")) * time.Second)
	if c.spec.ReadinessProbe == nil {
		c.ready = true
	}
	return nil
}

// commandLine maps the container's command/args onto the image's binary:
// with no command the binary is the entrypoint; a command naming the
// image's binary (by base name) runs it; any other absolute command runs as
// given. $(VAR) references expand from the container's environment.
func (c *container) commandLine(env []string) []string {
	vars := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	expand := func(ss []string) []string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = expandVars(s, vars)
		}
		return out
	}
	cmd, args := expand(c.spec.Command), expand(c.spec.Args)
	if len(cmd) == 0 {
		return append([]string{c.binary}, args...)
	}
	if filepath.Base(cmd[0]) == filepath.Base(c.binary) {
		cmd[0] = c.binary
	}
	return append(cmd, args...)
}

// expandVars replaces $(NAME) with vars[NAME] and $$ with $, leaving
// unknown references as they are (the kubelet's rule).
func expandVars(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) {
			if s[i+1] == '$' {
				b.WriteByte('$')
				i++
				continue
			}
			if s[i+1] == '(' {
				if j := strings.IndexByte(s[i:], ')'); j > 0 {
					name := s[i+2 : i+j]
					if v, ok := vars[name]; ok {
						b.WriteString(v)
						i += j
						continue
					}
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (c *container) onExit(pod *corev1.Pod, now time.Time) {
	code := c.proc.ExitCode()
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	c.lastTerm = &corev1.ContainerStateTerminated{
		ExitCode: int32(code), Reason: reason,
		StartedAt: metav1.NewTime(c.started), FinishedAt: metav1.NewTime(now),
	}
	c.proc, c.ready = nil, false
	switch pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		c.exitedForGood = true
		return
	case corev1.RestartPolicyOnFailure:
		if code == 0 {
			c.exitedForGood = true
			return
		}
	}
	if code != 0 {
		c.rt.k.recorder.Eventf(pod, corev1.EventTypeWarning, "BackOff", "container %s exited with code %d; restarting", c.spec.Name, code)
	}
	c.restarts++
	c.scheduleRestart(now)
}

func (c *container) scheduleRestart(now time.Time) {
	if now.Sub(c.started) > backoffReset {
		c.backoff = 0
	}
	if c.backoff == 0 {
		c.backoff = backoffStart
	} else {
		c.backoff = min(2*c.backoff, backoffMax)
	}
	c.nextStart = now.Add(c.backoff)
}

// stop runs the preStop hook, then SIGTERM, then SIGKILL after grace.
func (c *container) stop(ctx context.Context, pod *corev1.Pod, grace time.Duration) {
	if c.proc == nil {
		return
	}
	deadline := time.Now().Add(grace)
	if c.spec.Lifecycle != nil && c.spec.Lifecycle.PreStop != nil && grace > 0 {
		hctx, cancel := context.WithDeadline(ctx, deadline)
		if err := c.runHandler(hctx, pod, c.spec.Lifecycle.PreStop); err != nil {
			c.rt.k.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedPreStopHook", "container %s: %v", c.spec.Name, err)
		}
		cancel()
	}
	c.proc.Stop(max(time.Until(deadline), 0))
}

// status reports the container as the kubelet would.
func (c *container) status() corev1.ContainerStatus {
	cs := corev1.ContainerStatus{
		Name: c.spec.Name, Image: c.spec.Image, ImageID: "trellis-dev://" + ImageName(c.spec.Image),
		RestartCount: c.restarts, Ready: c.ready, LastTerminationState: corev1.ContainerState{Terminated: c.lastTerm},
	}
	started := c.proc != nil
	cs.Started = &started
	switch {
	case c.proc != nil:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.started)}
		cs.ContainerID = "trellis-dev://" + strconv.Itoa(c.proc.Pid())
	case c.exitedForGood && c.lastTerm != nil:
		cs.State.Terminated = c.lastTerm
		cs.LastTerminationState = corev1.ContainerState{}
	default:
		reason := c.waiting
		if reason == "" {
			reason = "ContainerCreating"
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: c.message}
	}
	return cs
}

// probe runs the readiness and liveness probes that are due.
func (c *container) probe(ctx context.Context, pod *corev1.Pod, now time.Time) {
	if p := c.spec.ReadinessProbe; p != nil && !now.Before(c.nextReady) {
		c.nextReady = now.Add(time.Duration(probeField(p, "period")) * time.Second)
		if err := c.runProbe(ctx, pod, p); err == nil {
			c.readyBad = 0
			c.readyOK++
			if c.readyOK >= int(probeField(p, "success")) {
				c.ready = true
			}
		} else {
			c.readyOK = 0
			c.readyBad++
			if c.readyBad >= int(probeField(p, "failure")) {
				c.ready = false
			}
		}
	}
	if p := c.spec.LivenessProbe; p != nil && !now.Before(c.nextLive) {
		c.nextLive = now.Add(time.Duration(probeField(p, "period")) * time.Second)
		if err := c.runProbe(ctx, pod, p); err == nil {
			c.liveBad = 0
		} else if c.liveBad++; c.liveBad >= int(probeField(p, "failure")) {
			c.rt.k.recorder.Eventf(pod, corev1.EventTypeWarning, "Unhealthy", "container %s failed liveness probe, will be restarted: %v", c.spec.Name, err)
			c.proc.Stop(time.Duration(30) * time.Second)
		}
	}
}

// probeField returns a probe setting with the API's defaults applied.
func probeField(p *corev1.Probe, f string) int32 {
	if p == nil {
		return 0
	}
	pick := func(v, def int32) int32 {
		if v <= 0 {
			return def
		}
		return v
	}
	switch f {
	case "delay":
		return p.InitialDelaySeconds
	case "period":
		return pick(p.PeriodSeconds, 10)
	case "timeout":
		return pick(p.TimeoutSeconds, 1)
	case "success":
		return pick(p.SuccessThreshold, 1)
	case "failure":
		return pick(p.FailureThreshold, 3)
	}
	return 0
}

func (c *container) runProbe(ctx context.Context, pod *corev1.Pod, p *corev1.Probe) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(probeField(p, "timeout"))*time.Second)
	defer cancel()
	return c.runHandler(ctx, pod, &corev1.LifecycleHandler{HTTPGet: p.HTTPGet, TCPSocket: p.TCPSocket, Exec: p.Exec})
}

// runHandler performs an httpGet, tcpSocket or exec action against the
// container, from the node's side as the kubelet does.
func (c *container) runHandler(ctx context.Context, pod *corev1.Pod, h *corev1.LifecycleHandler) error {
	switch {
	case h.HTTPGet != nil:
		port, err := c.resolvePort(h.HTTPGet.Port)
		if err != nil {
			return err
		}
		host := h.HTTPGet.Host
		if host == "" {
			host = c.rt.ip
		}
		scheme := strings.ToLower(string(h.HTTPGet.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		path := h.HTTPGet.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
		if err != nil {
			return err
		}
		for _, hd := range h.HTTPGet.HTTPHeaders {
			req.Header.Add(hd.Name, hd.Value)
		}
		req.Header.Set("User-Agent", "kube-probe/1.37")
		resp, err := probeClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case h.TCPSocket != nil:
		port, err := c.resolvePort(h.TCPSocket.Port)
		if err != nil {
			return err
		}
		host := h.TCPSocket.Host
		if host == "" {
			host = c.rt.ip
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case h.Exec != nil:
		if len(h.Exec.Command) == 0 {
			return fmt.Errorf("exec handler has no command")
		}
		args := append([]string{"netns", "exec", c.rt.netns}, h.Exec.Command...)
		out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		}
		return nil
	}
	return fmt.Errorf("handler has no action")
}

var probeClient = &http.Client{
	Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// resolvePort turns a port number or a container port name into a number.
func (c *container) resolvePort(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.spec.Name, p.StrVal)
}
