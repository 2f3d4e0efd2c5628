package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

// Decision is what a Service does about a plugin that did not load.
type Decision uint8

// Decisions.
const (
	// Refuse answers every request of the Service's stage with 503 naming
	// the plugin (failurePolicy "fail", the default).
	Refuse Decision = iota + 1
	// Skip serves the Service without the plugin (failurePolicy "ignore").
	Skip
)

// Decide applies p's failure policy. It is the one place the policy is
// interpreted.
func Decide(p *config.Plugin) Decision {
	if p.FailurePolicy == config.FailOpen {
		return Skip
	}
	return Refuse
}

// StageOf returns p's stage with its default.
func StageOf(p *config.Plugin) config.PluginStage {
	if p.Stage == config.StageBeforeAccess {
		return config.StageBeforeAccess
	}
	return config.StageAfterAccess
}

// Set is the plugins of one runtime: every plugin of the config compiled
// (or reused from the previous Set when its source did not change), and
// the chains of the Services using them. A Set is immutable once built.
type Set struct {
	env      *Env
	programs map[string]*Program // by content key
	plugins  map[string]*entry   // by plugin name
	chains   map[string]*Chain   // by service and chain key
	errs     []*LoadError
}

type entry struct {
	p    *config.Plugin
	prog *Program
	err  *LoadError // the plugin cannot be used by any Service
	hash string     // identifies source and config, for chain reuse
}

// NewSet compiles the plugins of a config. prev (may be nil) donates its
// compiled programs: a plugin whose source is unchanged is not compiled
// again, and one no longer listed is dropped with prev. A plugin that
// fails to load is recorded (Errors, the loaded metric, the log); it never
// makes NewSet fail.
func NewSet(plugins []config.Plugin, prev *Set, env *Env) *Set {
	if env == nil && prev != nil {
		env = prev.env
	} else {
		if env != nil && env.Metrics == nil && prev != nil {
			e := *env
			e.Metrics = prev.env.Metrics
			env = &e
		}
		env = env.withDefaults()
	}
	s := &Set{env: env, programs: map[string]*Program{}, plugins: map[string]*entry{}, chains: map[string]*Chain{}}
	if prev == nil {
		prev = &Set{}
	}
	for i := range plugins {
		p := &plugins[i]
		key := contentKey(p)
		prog := s.programs[key]
		if prog == nil {
			prog = prev.programs[key]
		}
		if prog == nil {
			start := time.Now()
			prog = compile(p, env)
			if prog.fail == nil {
				env.Log.Info("plugin compiled", zap.String("plugin", p.Name), zap.String("version", p.Version), zap.Duration("took", time.Since(start)))
			}
		}
		s.programs[key] = prog
		e := &entry{p: p, prog: prog, hash: entryHash(key, p)}
		if old := prev.plugins[p.Name]; old != nil && old.hash == e.hash && old.prog == prog {
			e.err = old.err // same source and config: same verdict
		} else if prog.fail != nil {
			e.err = prog.fail.forPlugin(p, "")
		} else if _, f := prog.newConfig(p.Config); f != nil {
			e.err = f.forPlugin(p, "")
		}
		if e.err != nil {
			s.errs = append(s.errs, e.err)
			env.Metrics.Loaded.WithLabelValues(p.Name).Set(0)
			if old := prev.plugins[p.Name]; old == nil || old.hash != e.hash {
				env.Log.Error("plugin not loaded", zap.String("plugin", p.Name), zap.String("version", p.Version), zap.Error(e.err))
			}
		} else {
			env.Metrics.Loaded.WithLabelValues(p.Name).Set(1)
		}
		s.plugins[p.Name] = e
	}
	for name := range prev.plugins {
		if s.plugins[name] == nil {
			env.Metrics.Loaded.DeleteLabelValues(name)
		}
	}
	return s
}

func entryHash(key string, p *config.Plugin) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00", key, p.Config, StageOf(p), p.FailurePolicy)
	return hex.EncodeToString(h.Sum(nil))
}

// Errors lists the plugins that did not load, and the (plugin, Service)
// pairs whose New failed, sorted by plugin then Service.
func (s *Set) Errors() []*LoadError {
	if s == nil {
		return nil
	}
	out := slices.Clone(s.errs)
	for _, c := range s.chains {
		if c.closed != nil && c.closed.Service != "" {
			out = append(out, c.closed)
		}
		for _, e := range c.skipped {
			if e.Service != "" {
				out = append(out, e)
			}
		}
	}
	slices.SortFunc(out, func(a, b *LoadError) int {
		return strings.Compare(a.Plugin+"\x00"+a.Service, b.Plugin+"\x00"+b.Service)
	})
	return out
}

// Env is the environment the Set was built with.
func (s *Set) Env() *Env { return s.env }

// Chains builds (or reuses from prev) the chains of one Service: names are
// its plugins, outermost first; timeout is its request timeout (0: the
// default plugin timeout). New is called here, once per plugin and
// Service, never per request. nil when names is empty.
func (s *Set) Chains(service string, names []string, timeout time.Duration, prev *Set) *Chains {
	if len(names) == 0 {
		return nil
	}
	if timeout <= 0 {
		timeout = s.env.DefaultTimeout
	}
	var before, after []*entry
	for _, n := range names {
		e := s.plugins[n]
		if e == nil {
			continue // config validation rejects unknown names
		}
		if StageOf(e.p) == config.StageBeforeAccess {
			before = append(before, e)
		} else {
			after = append(after, e)
		}
	}
	return &Chains{
		Before: s.chain(service, config.StageBeforeAccess, before, timeout, prev),
		After:  s.chain(service, config.StageAfterAccess, after, timeout, prev),
	}
}

func (s *Set) chain(service string, stage config.PluginStage, es []*entry, timeout time.Duration, prev *Set) *Chain {
	if len(es) == 0 {
		return nil
	}
	var kb strings.Builder
	fmt.Fprintf(&kb, "%s|%s|%d", service, stage, timeout)
	for _, e := range es {
		fmt.Fprintf(&kb, "|%s:%s:%t", e.p.Name, e.hash, e.err == nil)
	}
	key := kb.String()
	if c := s.chains[key]; c != nil {
		return c
	}
	if prev != nil {
		if c := prev.chains[key]; c != nil {
			s.chains[key] = c
			return c
		}
	}
	c := s.build(service, stage, es, timeout)
	c.key = key
	s.chains[key] = c
	return c
}

// build instantiates a chain, innermost plugin first (each New gets the
// next plugin as next). A plugin that did not load, or whose New fails for
// this Service, is skipped or refuses the chain, by its failure policy.
func (s *Set) build(service string, stage config.PluginStage, es []*entry, timeout time.Duration) *Chain {
	c := &Chain{service: service, stage: stage, budget: timeout, env: s.env}
	ctx, cancel := context.WithCancel(context.Background())
	// The plugins' context ends when the chain is collected: no runtime
	// uses it any more and no request is in it.
	runtime.AddCleanup(c, func(cancel context.CancelFunc) { cancel() }, cancel)

	var next http.Handler = &tail{service: service, plugin: es[len(es)-1].p.Name, env: s.env}
	var links []*link
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		err := e.err
		var h http.Handler
		if err == nil {
			cfg, f := e.prog.newConfig(e.p.Config)
			if f == nil {
				h, f = e.prog.instantiate(ctx, next, cfg, e.p.Name)
			}
			if f != nil {
				err = f.forPlugin(e.p, service)
				s.env.Log.Error("plugin not loaded for a service", zap.String("plugin", e.p.Name), zap.String("service", service), zap.Error(err))
			}
		}
		if err != nil {
			if Decide(e.p) == Skip {
				c.skipped = append(c.skipped, err)
				continue
			}
			c.closed = err
			c.skipped, c.head, links = nil, nil, nil
			break
		}
		l := &link{name: e.p.Name, h: h}
		links = append(links, l)
		next = l
	}
	slices.Reverse(links)
	slices.Reverse(c.skipped)
	for i, l := range links {
		l.idx = int32(i)
	}
	c.links = links
	if c.closed == nil && len(links) > 0 {
		c.head = links[0]
	}
	return c
}
