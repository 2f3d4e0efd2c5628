package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// TTL of answers and of negative answers: short, so that a Service leaving
// the mesh stops resolving within seconds.
const TTL = 5

// Entry is one mesh name: Service Name in Namespace resolves to IPs (the
// shadow Service's cluster IPs).
type Entry struct {
	Namespace, Name string
	IPs             []netip.Addr
}

// Table is an immutable name table.
type Table struct {
	domains []string                // lower-case, no trailing dot, longest first
	names   map[string][]netip.Addr // "name.namespace" -> IPs
	nsSeen  map[string]bool         // namespaces with at least one name
	size    int
}

// NewTable builds a table for the given domains.
func NewTable(domains []string, entries []Entry) *Table {
	t := &Table{names: make(map[string][]netip.Addr, len(entries)), nsSeen: map[string]bool{}}
	for _, d := range domains {
		t.domains = append(t.domains, strings.TrimSuffix(strings.ToLower(d), "."))
	}
	sort.Slice(t.domains, func(i, j int) bool { return len(t.domains[i]) > len(t.domains[j]) })
	for _, e := range entries {
		if len(e.IPs) == 0 {
			continue
		}
		k := strings.ToLower(e.Name + "." + e.Namespace)
		t.names[k] = append([]netip.Addr(nil), e.IPs...)
		t.nsSeen[strings.ToLower(e.Namespace)] = true
	}
	t.size = len(t.names)
	return t
}

// Len is the number of names.
func (t *Table) Len() int { return t.size }

// Lookup resolves "service.namespace.domain" (case-insensitive, with or
// without the trailing dot).
func (t *Table) Lookup(name string) ([]netip.Addr, bool) {
	rest, _, ok := t.split(name)
	if !ok {
		return nil, false
	}
	ips, ok := t.names[rest]
	return ips, ok
}

// split returns the part before the domain and the domain.
func (t *Table) split(qname string) (string, string, bool) {
	q := strings.TrimSuffix(strings.ToLower(qname), ".")
	for _, d := range t.domains {
		if q == d {
			return "", d, true
		}
		if strings.HasSuffix(q, "."+d) {
			return strings.TrimSuffix(q, "."+d), d, true
		}
	}
	return "", "", false
}

// Server answers mesh names over UDP and TCP.
type Server struct {
	table atomic.Pointer[Table]
	log   *zap.Logger
	// Queries counts answers by rcode (optional).
	OnAnswer func(rcode int)
}

// NewServer returns a server with an empty table for domains.
func NewServer(domains []string, log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{log: log}
	s.table.Store(NewTable(domains, nil))
	return s
}

// SetTable swaps the table in.
func (s *Server) SetTable(t *Table) { s.table.Store(t) }

// Table returns the current table.
func (s *Server) Table() *Table { return s.table.Load() }

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := s.answer(r)
	if s.OnAnswer != nil {
		s.OnAnswer(m.Rcode)
	}
	_ = w.WriteMsg(m)
}

func (s *Server) answer(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Compress = true
	if r.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := r.Question[0]
	t := s.table.Load()
	rest, domain, ok := t.split(q.Name)
	if !ok || q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	soa := &dns.SOA{
		Hdr:     dns.RR_Header{Name: dns.Fqdn(domain), Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
		Ns:      "ns.dns." + dns.Fqdn(domain),
		Mbox:    "hostmaster." + dns.Fqdn(domain),
		Serial:  uint32(time.Now().Unix()),
		Refresh: 60, Retry: 30, Expire: 600, Minttl: TTL,
	}
	if rest == "" { // the apex
		if q.Qtype == dns.TypeSOA {
			m.Answer = append(m.Answer, soa)
		} else {
			m.Ns = append(m.Ns, soa)
		}
		return m
	}
	ips, found := t.names[rest]
	if !found {
		if !strings.Contains(rest, ".") && t.nsSeen[rest] {
			m.Ns = append(m.Ns, soa) // a namespace: exists, no records
			return m
		}
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
		return m
	}
	for _, ip := range ips {
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: TTL}
		switch {
		case ip.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IP(ip.AsSlice())})
		case ip.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(ip.AsSlice())})
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, soa) // NODATA
	}
	return m
}

// ListenAndServe serves UDP and TCP on addr until ctx ends. ready, when
// not nil, is called with the bound addresses once both listen.
func (s *Server) ListenAndServe(ctx context.Context, addr string, ready func(udp, tcp net.Addr)) error {
	pc, l, err := listenPair(addr)
	if err != nil {
		return err
	}
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	udp := &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: notify}
	tcp := &dns.Server{Listener: l, Handler: s, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, NotifyStartedFunc: notify}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, srv := range []*dns.Server{udp, tcp} {
		wg.Add(1)
		go func(srv *dns.Server) {
			defer wg.Done()
			if err := srv.ActivateAndServe(); err != nil && ctx.Err() == nil {
				errs <- err
			}
		}(srv)
	}
	for i := 0; i < 2; i++ {
		select {
		case <-started:
		case err := <-errs:
			pc.Close()
			l.Close()
			wg.Wait()
			return fmt.Errorf("dns: %w", err)
		}
	}
	if ready != nil {
		ready(pc.LocalAddr(), l.Addr())
	}
	s.log.Info("mesh DNS responder listening", zap.String("addr", addr))
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	_ = udp.Shutdown()
	_ = tcp.Shutdown()
	wg.Wait()
	if runErr != nil {
		return fmt.Errorf("dns: %w", runErr)
	}
	return nil
}

// listenPair binds UDP and TCP on one port. With port 0 the UDP port is
// picked first and tried for TCP; a few picks are tried when TCP is taken.
func listenPair(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns: address %q: %w", addr, err)
	}
	var lastErr error
	for try := 0; try < 10; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		tcpAddr := addr
		if port == "0" {
			tcpAddr = net.JoinHostPort(host, fmt.Sprint(pc.LocalAddr().(*net.UDPAddr).Port))
		}
		l, err := net.Listen("tcp", tcpAddr)
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		lastErr = fmt.Errorf("dns: listen tcp %s: %w", tcpAddr, err)
		if port != "0" {
			break
		}
	}
	return nil, nil, lastErr
}
