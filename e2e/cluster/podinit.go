package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PodInit runs as the first program of every container, inside the private
// mount namespace `ip netns exec` creates. It bind-mounts the pod's volumes
// at their mount paths and then execs the container's command. A mount path
// whose folder does not exist on the host is made inside an overlay of its
// nearest existing parent, in this mount namespace only, so the host's
// filesystem never changes.
//
// Arguments: [--mount SRC:DST[:ro]]... [--resolv FILE] [--overlay-dir DIR]
// [--workdir DIR] -- COMMAND [ARGS...]
func PodInit(args []string) error {
	var mounts []string
	var resolv, overlayDir, workdir string
	i := 0
	for ; i < len(args) && args[i] != "--"; i++ {
		if i+1 >= len(args) {
			return fmt.Errorf("pod-init: flag %s needs a value", args[i])
		}
		switch args[i] {
		case "--mount":
			mounts = append(mounts, args[i+1])
		case "--resolv":
			resolv = args[i+1]
		case "--overlay-dir":
			overlayDir = args[i+1]
		case "--workdir":
			workdir = args[i+1]
		default:
			return fmt.Errorf("pod-init: unknown flag %s", args[i])
		}
		i++
	}
	if i+1 >= len(args) {
		return errors.New("pod-init: no command after --")
	}
	argv := args[i+1:]
	overlaid := map[string]bool{}
	for _, m := range mounts {
		parts := strings.Split(m, ":")
		if len(parts) < 2 {
			return fmt.Errorf("pod-init: mount %q is not SRC:DST[:ro]", m)
		}
		src, dst, ro := parts[0], parts[1], len(parts) > 2 && parts[2] == "ro"
		fi, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("pod-init: volume source %s: %w", src, err)
		}
		if err := makeMountPoint(dst, fi.IsDir(), overlayDir, overlaid); err != nil {
			return fmt.Errorf("pod-init: mountPath %s: %w", dst, err)
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("pod-init: bind %s on %s: %w", src, dst, err)
		}
		if ro {
			if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("pod-init: read-only %s: %w", dst, err)
			}
		}
	}
	// An overlay on /etc hides the resolv.conf that `ip netns exec` bound
	// there; bind the pod's file again.
	if resolv != "" && overlaid["/etc"] {
		if err := unix.Mount(resolv, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pod-init: resolv.conf: %w", err)
		}
	}
	if workdir != "" {
		if err := os.Chdir(workdir); err != nil {
			return fmt.Errorf("pod-init: workingDir %s: %w", workdir, err)
		}
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("pod-init: command %s: %w", argv[0], err)
	}
	return unix.Exec(bin, argv, os.Environ())
}

// makeMountPoint makes dst exist (a folder, or an empty file when the
// source is a file), overlaying its nearest existing parent when needed.
func makeMountPoint(dst string, dir bool, overlayDir string, overlaid map[string]bool) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	parent := filepath.Dir(dst)
	for {
		if _, err := os.Stat(parent); err == nil {
			break
		}
		parent = filepath.Dir(parent)
	}
	if parent == "/" {
		return errors.New("no parent folder exists on this machine; mount below an existing folder such as /etc, /var or /run")
	}
	if !overlaid[parent] {
		if overlayDir == "" {
			return errors.New("folder does not exist and no overlay folder was given")
		}
		base := filepath.Join(overlayDir, strconv.Itoa(len(overlaid)))
		upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		opts := "lowerdir=" + parent + ",upperdir=" + upper + ",workdir=" + work
		if err := unix.Mount("overlay", parent, "overlay", 0, opts); err != nil {
			return fmt.Errorf("overlay on %s: %w", parent, err)
		}
		overlaid[parent] = true
	}
	if dir {
		return os.MkdirAll(dst, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, nil, 0o644)
}
