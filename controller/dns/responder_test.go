package dns

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestResponderOverRealSockets queries the responder over UDP and TCP.
func TestResponderOverRealSockets(t *testing.T) {
	s := NewServer([]string{"mesh", "traefik.mesh"}, nil)
	s.SetTable(NewTable([]string{"mesh", "traefik.mesh"}, []Entry{
		{Namespace: "shop", Name: "web", IPs: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::10")}},
		{Namespace: "shop", Name: "gone"}, // no IP yet: not resolvable
	}))
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.ListenAndServe(ctx, "127.0.0.1:0", func(u, tc net.Addr) { addrs <- [2]net.Addr{u, tc} })
	}()
	var a [2]net.Addr
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("responder did not start")
	}
	cases := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"web.shop.mesh.", dns.TypeA, dns.RcodeSuccess, []string{"10.96.0.10"}},
		{"WEB.Shop.Mesh.", dns.TypeA, dns.RcodeSuccess, []string{"10.96.0.10"}},
		{"web.shop.traefik.mesh.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00::10"}},
		{"web.shop.mesh.", dns.TypeMX, dns.RcodeSuccess, nil},
		{"gone.shop.mesh.", dns.TypeA, dns.RcodeNameError, nil},
		{"nope.shop.mesh.", dns.TypeA, dns.RcodeNameError, nil},
		{"shop.mesh.", dns.TypeA, dns.RcodeSuccess, nil},
		{"mesh.", dns.TypeSOA, dns.RcodeSuccess, []string{"soa"}},
		{"a.web.shop.mesh.", dns.TypeA, dns.RcodeNameError, nil},
		{"example.com.", dns.TypeA, dns.RcodeRefused, nil},
	}
	for _, netw := range []string{"udp", "tcp"} {
		addr := a[0].String()
		if netw == "tcp" {
			addr = a[1].String()
		}
		c := &dns.Client{Net: netw, Timeout: 5 * time.Second}
		for _, tc := range cases {
			m := new(dns.Msg)
			m.SetQuestion(tc.name, tc.qtype)
			r, _, err := c.Exchange(m, addr)
			if err != nil {
				t.Fatalf("%s %s: %v", netw, tc.name, err)
			}
			if r.Rcode != tc.rcode {
				t.Errorf("%s %s %s: rcode %s, want %s", netw, tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			var got []string
			for _, rr := range r.Answer {
				switch v := rr.(type) {
				case *dns.A:
					got = append(got, v.A.String())
				case *dns.AAAA:
					got = append(got, v.AAAA.String())
				case *dns.SOA:
					got = append(got, "soa")
				}
				if rr.Header().Ttl != TTL {
					t.Errorf("%s: ttl %d", tc.name, rr.Header().Ttl)
				}
			}
			if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
				t.Errorf("%s %s: answers %v, want %v", netw, tc.name, got, tc.want)
			}
			if tc.rcode != dns.RcodeRefused && !r.Authoritative {
				t.Errorf("%s: not authoritative", tc.name)
			}
		}
	}
	// Swapping the table takes effect on the next query.
	s.SetTable(NewTable([]string{"mesh"}, nil))
	m := new(dns.Msg)
	m.SetQuestion("web.shop.mesh.", dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, a[0].String())
	if err != nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("after removal: %v %v", r, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
