package traffic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

// Commands are stat, top and why.
func Commands(env *clienv.Env) []*cobra.Command {
	return commands(env, defaultDeps())
}

// deps are what the commands take from the outside world, so tests can
// serve real proxy metrics and control time.
type deps struct {
	source func(*clienv.Env) metricsSource
	now    func() time.Time
	// wait returns after d, or with ctx's error.
	wait func(ctx context.Context, d time.Duration) error
}

func defaultDeps() deps {
	return deps{
		source: func(env *clienv.Env) metricsSource { return &podSource{env: env} },
		now:    time.Now,
		wait: func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	}
}

func commands(env *clienv.Env, d deps) []*cobra.Command {
	return []*cobra.Command{statCmd(env, d), topCmd(env, d), whyCmd(env)}
}

// minInterval keeps a typo (--interval 1ms) from hammering the apiserver.
const minInterval = 100 * time.Millisecond

func checkInterval(d time.Duration) error {
	if d < minInterval {
		return clienv.Usagef("--interval %s: must be at least %s (rates need two scrapes that far apart), e.g. --interval 2s", d, minInterval)
	}
	return nil
}

// sampler scrapes rounds and hands windows to render: once (two scrapes
// an interval apart), or every interval until ctx ends when watch is set.
type sampler struct {
	env      *clienv.Env
	deps     deps
	interval time.Duration
	watch    bool
}

// run calls render for each window. In watch mode a window that could not
// be measured (no proxy readable) is reported on stderr and the next
// interval is tried; interrupting (ctx) ends the command successfully.
func (s *sampler) run(ctx context.Context, render func(w *window, first bool) error) error {
	src := s.deps.source(s.env)
	prev, err := scrapeRound(ctx, src, s.deps.now)
	if err != nil {
		return s.stopped(ctx, err)
	}
	first := true
	for {
		if err := s.deps.wait(ctx, s.interval); err != nil {
			return s.stopped(ctx, err)
		}
		cur, err := scrapeRound(ctx, src, s.deps.now)
		if err != nil {
			if !s.watch || ctx.Err() != nil {
				return s.stopped(ctx, err)
			}
			fmt.Fprintf(s.env.IO.ErrOut, "%s %v\n", s.env.Warn(), err)
			continue
		}
		w, err := diff(prev, cur)
		prev = cur
		if err != nil {
			err = s.explain(err, w)
			if !s.watch {
				return err
			}
			fmt.Fprintf(s.env.IO.ErrOut, "%s %v\n", s.env.Warn(), err)
			continue
		}
		for _, line := range w.Warnings {
			fmt.Fprintf(s.env.IO.ErrOut, "%s %s\n", s.env.Warn(), line)
		}
		if err := render(w, first); err != nil {
			return err
		}
		first = false
		if !s.watch {
			return nil
		}
	}
}

// stopped turns an interruption into a clean end in watch mode.
func (s *sampler) stopped(ctx context.Context, err error) error {
	if s.watch && (ctx.Err() != nil || errors.Is(err, context.Canceled)) {
		err = nil // interrupted: watching ends normally
	}
	return err
}

func (s *sampler) explain(err error, w *window) error {
	for _, line := range w.Warnings {
		fmt.Fprintf(s.env.IO.ErrOut, "%s %s\n", s.env.Warn(), line)
	}
	ds := fmt.Sprintf("DaemonSet %s/%s", s.env.MeshNamespace, proxyDaemonSet)
	switch {
	case errors.Is(err, errNoProxies):
		return clienv.Fail(clienv.ExitFailure, fmt.Errorf("%w: %s has no running pod, so there are no metrics to read", err, ds),
			"check the proxies with kubectl get pods -n "+s.env.MeshNamespace+" and kubectl trellis check")
	case errors.Is(err, errNoneRead):
		return clienv.Fail(clienv.ExitFailure, fmt.Errorf("%w (see the warnings above)", err),
			"reading /metrics needs RBAC get pods/proxy in namespace "+s.env.MeshNamespace+" and proxies that are up")
	case errors.Is(err, errNoBaseline):
		return clienv.Fail(clienv.ExitFailure, fmt.Errorf("%w (see the warnings above), so no rate can be computed", err), "try again")
	}
	return err
}

// printDoc writes one JSON or YAML document of a (possibly repeating)
// output: YAML documents after the first are preceded by ---.
func printDoc(w io.Writer, format string, v any, first bool) error {
	if format == clienv.YAML && !first {
		if _, err := io.WriteString(w, "---\n"); err != nil {
			return err
		}
	}
	return clienv.PrintData(w, format, v)
}
