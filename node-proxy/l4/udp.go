package l4

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/trellis-mesh/trellis/node-proxy/balance"
	"github.com/trellis-mesh/trellis/node-proxy/proxyerr"
	"github.com/trellis-mesh/trellis/node-proxy/resilience"
	"github.com/trellis-mesh/trellis/node-proxy/runtime"
)

// MaxFlows bounds the flow table of one UDP port.
const MaxFlows = 16384

// UDP serves one UDP listen port. A flow is keyed by the client address;
// it is bound to one pod and to the config it started with, and ends after
// its service's idle timeout without packets in either direction.
type UDP struct {
	Deps
	Port int32
	pc   *net.UDPConn

	mu     sync.Mutex
	flows  map[netip.AddrPort]*flow
	closed bool
	wg     sync.WaitGroup
	stop   chan struct{}
}

type flow struct {
	up      net.Conn // nil for a denied flow (packets dropped until idle)
	e       *balance.Endpoint
	t       *runtime.Target
	route   *runtime.Route
	idle    time.Duration
	last    atomic.Int64 // unix nanos of the last packet either way
	closing atomic.Bool
}

// NewUDP returns a UDP proxy for pc, which listens on port.
func NewUDP(d Deps, port int32, pc *net.UDPConn) *UDP {
	return &UDP{Deps: d, Port: port, pc: pc, flows: map[netip.AddrPort]*flow{}, stop: make(chan struct{})}
}

// Serve reads client packets until the socket is closed.
func (p *UDP) Serve() error {
	go p.janitor()
	buf := make([]byte, 64<<10)
	for {
		n, client, err := p.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			p.Log.Warn("udp read", zap.Int32("port", p.Port), zap.Error(err))
			continue
		}
		client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
		f := p.flow(client)
		if f == nil || f.up == nil {
			continue
		}
		f.last.Store(time.Now().UnixNano())
		if _, err := f.up.Write(buf[:n]); err != nil {
			p.Log.Debug("udp write upstream", zap.Error(err))
			continue
		}
		p.Metrics.L4Bytes.WithLabelValues("udp", f.route.Service.Namespace, f.route.Service.Name, "to_upstream").Add(float64(n))
	}
}

// flow finds or starts the flow of client; nil when the table is full or
// there is no route.
func (p *UDP) flow(client netip.AddrPort) *flow {
	p.mu.Lock()
	f := p.flows[client]
	p.mu.Unlock()
	if f != nil {
		return f
	}
	rt := p.Runtime.Load()
	if rt == nil {
		return nil
	}
	route := rt.UDP[p.Port]
	if route == nil {
		return nil
	}
	p.mu.Lock()
	full := len(p.flows) >= MaxFlows || p.closed
	p.mu.Unlock()
	if full {
		p.Metrics.UDPFlows.WithLabelValues("", "", "", route.Service.Namespace, route.Service.Name, "overload").Inc()
		return nil
	}
	src := rt.Source(client.Addr())
	f = &flow{route: route, idle: route.Service.UDPIdleTimeout}
	up, t, e, err := connect(context.Background(), p.Deps, route, src, "udp")
	p.Metrics.UDPFlows.WithLabelValues(src.Identity.Namespace, src.Identity.ServiceAccount, src.Service,
		route.Service.Namespace, route.Service.Name, proxyerr.Classify(err).String()).Inc()
	if err != nil {
		// Remember the refusal for the idle timeout so a stream of packets
		// is judged once, not per packet.
		p.Log.Debug("udp flow refused", zap.Int32("port", p.Port), zap.String("src", client.String()),
			zap.String("reason", proxyerr.Reason(err)))
	} else {
		f.up, f.t, f.e = up, t, e
	}
	f.last.Store(time.Now().UnixNano())
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		f.end(true)
		return nil
	}
	p.flows[client] = f
	if f.up != nil {
		p.wg.Add(1)
		go p.replies(client, f)
	}
	p.mu.Unlock()
	p.Metrics.OpenConns.WithLabelValues("udp").Inc()
	return f
}

// replies relays upstream packets back to the client until the flow ends.
func (p *UDP) replies(client netip.AddrPort, f *flow) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := f.up.Read(buf)
		if err != nil {
			if !f.closing.Load() {
				// ICMP unreachable and the like: count against the pod, end the flow.
				f.t.Pool.Report(f.e, false, time.Now().UnixNano())
				p.remove(client, f, false)
			}
			return
		}
		f.last.Store(time.Now().UnixNano())
		if _, err := p.pc.WriteToUDPAddrPort(buf[:n], client); err != nil {
			p.Log.Debug("udp write client", zap.Error(err))
		}
		p.Metrics.L4Bytes.WithLabelValues("udp", f.route.Service.Namespace, f.route.Service.Name, "to_client").Add(float64(n))
	}
}

func (f *flow) end(ok bool) {
	if f.closing.Swap(true) {
		return
	}
	if f.up != nil {
		f.up.Close()
		balance.Finish(f.e)
		o := resilience.Success
		if !ok {
			o = resilience.Failure
		}
		f.t.Breaker.Done(o, time.Now())
	}
}

func (p *UDP) remove(client netip.AddrPort, f *flow, ok bool) {
	p.mu.Lock()
	if p.flows[client] == f {
		delete(p.flows, client)
		p.Metrics.OpenConns.WithLabelValues("udp").Dec()
	}
	p.mu.Unlock()
	f.end(ok)
}

// janitor ends idle flows.
func (p *UDP) janitor() {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-tick.C:
			var idle []netip.AddrPort
			var fs []*flow
			p.mu.Lock()
			for c, f := range p.flows {
				if now.UnixNano()-f.last.Load() >= int64(f.idle) {
					idle = append(idle, c)
					fs = append(fs, f)
				}
			}
			p.mu.Unlock()
			for i := range idle {
				p.remove(idle[i], fs[i], true)
			}
		}
	}
}

// Flows returns the number of tracked flows.
func (p *UDP) Flows() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.flows)
}

// CloseListener stops reading new packets; existing flows' replies stop too,
// since they share the socket. UDP has no connection to drain, so Drain
// only waits for ctx or for flows to go idle.
func (p *UDP) CloseListener() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	return p.pc.Close()
}

// Drain keeps serving existing flows until they go idle or ctx ends, then
// closes the socket and all flows.
func (p *UDP) Drain(ctx context.Context) int {
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for p.Flows() > 0 {
		select {
		case <-ctx.Done():
			goto done
		case <-poll.C:
		}
	}
done:
	n := p.Flows()
	_ = p.CloseListener() // closing an already-failed socket has nothing left to report
	close(p.stop)
	p.mu.Lock()
	fs := p.flows
	p.flows = map[netip.AddrPort]*flow{}
	p.mu.Unlock()
	for _, f := range fs {
		f.end(true)
		p.Metrics.OpenConns.WithLabelValues("udp").Dec()
	}
	p.wg.Wait()
	return n
}
