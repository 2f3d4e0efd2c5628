package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Without root, the cluster runs in a sandbox: an unprivileged user
// namespace (the caller is root inside it) with its own network and mount
// namespaces, held by the supervisor. Everything the cluster makes lives
// inside; the host is never touched, and the sandbox vanishes with the
// supervisor. Commands reach it by entering the supervisor's namespaces
// (nsenter), so `trellis-dev exec`, `status` and `shell` work as with root.

// SandboxEnv marks a process that already runs inside the sandbox.
const SandboxEnv = "TRELLIS_SANDBOX"

// InSandbox reports whether this process runs inside the sandbox.
func InSandbox() bool { return os.Getenv(SandboxEnv) == "1" }

// NeedsSandbox reports whether cluster commands must use the sandbox: not
// root, and not already inside it.
func NeedsSandbox() bool { return os.Geteuid() != 0 && !InSandbox() }

// SandboxAvailable checks that unprivileged user namespaces with network
// and mount namespaces can be made here.
func SandboxAvailable(ctx context.Context) error {
	if _, err := exec.LookPath("unshare"); err != nil {
		return fmt.Errorf("not root, and unshare (util-linux) is missing: %w", err)
	}
	if err := run(ctx, "unshare", "--user", "--map-root-user", "--net", "--mount", "true"); err != nil {
		return fmt.Errorf("%w; unprivileged user namespaces are not available here (%s)", ErrNotRoot, err.Error())
	}
	return nil
}

// SandboxCommand wraps argv so that it starts a new sandbox.
func SandboxCommand(argv []string) []string {
	return append([]string{"unshare", "--user", "--map-root-user", "--net", "--mount", "--propagation", "private", "--"}, argv...)
}

// EnterCommand wraps argv so that it runs inside the sandbox held by pid,
// as root there.
func EnterCommand(pid int, argv []string) []string {
	return append([]string{"nsenter", "--target", strconv.Itoa(pid), "--user", "--net", "--mount", "--preserve-credentials", "--"}, argv...)
}

// prepareSandbox runs first in a supervisor started by SandboxCommand: a
// private /run holds the network namespaces, an overlay makes /etc
// writable for /etc/netns, and loopback comes up.
func prepareSandbox(ctx context.Context, stateDir string) error {
	if err := unix.Mount("trellis", "/run", "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("sandbox: tmpfs on /run: %w", err)
	}
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	base := filepath.Join(stateDir, "sandbox")
	_ = os.RemoveAll(base)
	upper, work := filepath.Join(base, "etc-upper"), filepath.Join(base, "etc-work")
	// /etc/netns is made in the upper layer before mounting: a folder the
	// sandbox owns, whereas /etc itself belongs to the host's root, whom
	// the sandbox cannot act as.
	for _, d := range []string{filepath.Join(upper, "netns"), work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("overlay", "/etc", "overlay", 0, "lowerdir=/etc,upperdir="+upper+",workdir="+work); err != nil {
		return fmt.Errorf("sandbox: overlay on /etc: %w", err)
	}
	return run(ctx, "ip", "link", "set", "lo", "up")
}
