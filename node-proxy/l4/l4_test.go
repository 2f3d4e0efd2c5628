package l4

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/forward"
	"github.com/trellis-mesh/trellis/node-proxy/runtime"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

const (
	apiIP   = "127.0.0.9"  // shop/api, allowed to reach the db
	webIP   = "127.0.0.10" // shop/web, not allowed
	backend = "127.0.0.2"
)

// tcpEcho answers each line with name + line, on backend:port.
func tcpEcho(t *testing.T, ip, name string) int32 {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := io.WriteString(c, name+":"+sc.Text()+"\n"); err != nil {
						return // the client went away
					}
				}
			}()
		}
	}()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func udpEcho(t *testing.T, ip, name string) int32 {
	pc, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte(name+":"), buf[:n]...), a) // best effort, like any UDP reply
		}
	}()
	return int32(pc.LocalAddr().(*net.UDPAddr).Port)
}

func l4Config(proto config.Protocol, ports ...int32) *config.Config {
	mk := func(name string, port int32) config.Service {
		return config.Service{Namespace: "shop", Name: name,
			Ports:     []config.ServicePort{{Name: "p", Port: 5432, TargetPort: port, Protocol: proto, ListenPort: 1}},
			Endpoints: []config.Endpoint{{IP: backend, Ready: true}}}
	}
	c := &config.Config{Node: "n", ACL: config.ACLOn,
		LocalPods: []config.LocalPod{
			{IP: apiIP, Identity: config.Identity{ServiceAccount: "api", Namespace: "shop"}},
			{IP: webIP, Identity: config.Identity{ServiceAccount: "web", Namespace: "shop"}}}}
	rule := []config.AccessRule{{Source: "TrafficTarget shop/db-access", Sources: []config.Identity{{ServiceAccount: "api", Namespace: "shop"}}}}
	db := mk("db", ports[0])
	db.Rules = rule
	c.Services = append(c.Services, db)
	if len(ports) == 3 {
		v1, v2 := mk("db-v1", ports[1]), mk("db-v2", ports[2])
		v1.Ports[0].ListenPort, v2.Ports[0].ListenPort = 2, 3
		c.Services = append(c.Services, v1, v2)
		c.Services[0].Split = &config.Split{Backends: []config.Backend{{Service: "db-v1", Weight: 50}, {Service: "db-v2", Weight: 50}}}
	}
	c.Version = c.Hash()
	return c
}

func deps(t *testing.T, c *config.Config) Deps {
	rt, err := runtime.Build(c, nil, runtime.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	h := &runtime.Holder{}
	h.Store(rt)
	return Deps{Runtime: h, Dialer: forward.NewDirect(forward.Options{}), Metrics: telemetry.NewMetrics(), Log: zap.NewNop()}
}

func startTCP(t *testing.T, d Deps) (*TCP, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := NewTCP(d, 1, l)
	go func() { _ = p.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.Drain(ctx)
	})
	return p, l.Addr().String()
}

func dialFrom(t *testing.T, network, src, dst string) net.Conn {
	var la net.Addr = &net.TCPAddr{IP: net.ParseIP(src)}
	if network == "udp" {
		la = &net.UDPAddr{IP: net.ParseIP(src)}
	}
	c, err := (&net.Dialer{LocalAddr: la, Timeout: 2 * time.Second}).Dial(network, dst)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(c net.Conn, msg string) (string, error) {
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestTCPAccessAndRelay(t *testing.T) {
	port := tcpEcho(t, backend, "db")
	d := deps(t, l4Config(config.ProtocolTCP, port))
	_, addr := startTCP(t, d)
	got, err := roundTrip(dialFrom(t, "tcp", apiIP, addr), "hello")
	if err != nil || got != "db:hello\n" {
		t.Fatalf("allowed client: %q %v", got, err)
	}
	// A forbidden source is cut off before any byte reaches the database.
	// (The reset may even arrive before the dial returns.)
	if c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(webIP)}}).Dial("tcp", addr); err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err = roundTrip(c, "DROP TABLE")
		c.Close()
		if err == nil {
			t.Fatalf("denied client got a reply: %q", got)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(d.Metrics.TCPConns.WithLabelValues("shop", "web", "", "shop", "db", "denied")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("denied connection not counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTCPHalfClose(t *testing.T) {
	l, err := net.Listen("tcp", backend+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(c) // until the client's FIN
		_, _ = io.WriteString(c, "got "+string(b))
		c.Close()
	}()
	d := deps(t, l4Config(config.ProtocolTCP, int32(l.Addr().(*net.TCPAddr).Port)))
	_, addr := startTCP(t, d)
	c := dialFrom(t, "tcp", apiIP, addr)
	if _, err := io.WriteString(c, "request"); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "got request" {
		t.Fatalf("half-close not propagated: %q %v", b, err)
	}
}

func TestTCPSplitPerConnection(t *testing.T) {
	d := deps(t, l4Config(config.ProtocolTCP, tcpEcho(t, backend, "root"), tcpEcho(t, backend, "v1"), tcpEcho(t, backend, "v2")))
	_, addr := startTCP(t, d)
	counts := map[string]int{}
	for i := 0; i < 200; i++ {
		c := dialFrom(t, "tcp", apiIP, addr)
		first, err := roundTrip(c, "a")
		if err != nil {
			t.Fatal(err)
		}
		// Every message on one connection goes to the same backend.
		second, err := roundTrip(c, "a")
		if err != nil || second != first {
			t.Fatalf("connection switched backend: %q then %q", first, second)
		}
		c.Close()
		counts[strings.Split(first, ":")[0]]++
	}
	if counts["v1"] < 70 || counts["v2"] < 70 || counts["root"] != 0 {
		t.Fatalf("50/50 split per connection: %v", counts)
	}
}

func TestTCPDrainWaitsThenCuts(t *testing.T) {
	d := deps(t, l4Config(config.ProtocolTCP, tcpEcho(t, backend, "db")))
	p, addr := startTCP(t, d)
	c := dialFrom(t, "tcp", apiIP, addr)
	if _, err := roundTrip(c, "x"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if cut := p.Drain(ctx); cut != 1 {
		t.Fatalf("drain cut %d connections, want 1", cut)
	}
	if time.Since(start) < 150*time.Millisecond {
		t.Fatal("drain did not wait for the open connection")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("listener still accepting after drain")
	}
}

func startUDP(t *testing.T, d Deps) (*UDP, string) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	p := NewUDP(d, 1, pc)
	go func() { _ = p.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p.Drain(ctx)
	})
	return p, pc.LocalAddr().String()
}

func udpAsk(c net.Conn, msg string) (string, error) {
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func TestUDPFlows(t *testing.T) {
	c := l4Config(config.ProtocolUDP, udpEcho(t, backend, "dns"))
	c.Services[0].Resilience.UDPIdleTimeout = config.Duration(300 * time.Millisecond)
	c.Version = c.Hash()
	d := deps(t, c)
	p, addr := startUDP(t, d)
	cl := dialFrom(t, "udp", apiIP, addr)
	for i := 0; i < 3; i++ {
		got, err := udpAsk(cl, "q")
		if err != nil || got != "dns:q" {
			t.Fatalf("allowed flow: %q %v", got, err)
		}
	}
	if p.Flows() != 1 {
		t.Fatalf("%d flows for one client, want 1", p.Flows())
	}
	denied := dialFrom(t, "udp", webIP, addr)
	denied.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if got, err := udpAsk(denied, "q"); err == nil {
		t.Fatalf("denied source got a reply %q", got)
	} else if !errors.Is(err, errDeadline(err)) {
		t.Fatalf("unexpected error %v", err)
	}
	// Idle flows end.
	deadline := time.Now().Add(3 * time.Second)
	for p.Flows() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d flows still open after the idle timeout", p.Flows())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// And a new flow starts on the next packet.
	if got, err := udpAsk(cl, "again"); err != nil || got != "dns:again" {
		t.Fatalf("flow after idle: %q %v", got, err)
	}
	if n := testutil.ToFloat64(d.Metrics.UDPFlows.WithLabelValues("shop", "api", "", "shop", "db", "ok")); n != 2 {
		t.Fatalf("udp flows counted %v, want 2", n)
	}
}

func TestUDPSplitPerFlow(t *testing.T) {
	d := deps(t, l4Config(config.ProtocolUDP, udpEcho(t, backend, "root"), udpEcho(t, backend, "v1"), udpEcho(t, backend, "v2")))
	_, addr := startUDP(t, d)
	counts := map[string]int{}
	for i := 0; i < 100; i++ {
		c := dialFrom(t, "udp", apiIP, addr)
		first, err := udpAsk(c, "a")
		if err != nil {
			t.Fatal(err)
		}
		if second, _ := udpAsk(c, "a"); second != first {
			t.Fatalf("flow switched backend: %q then %q", first, second)
		}
		counts[strings.Split(first, ":")[0]]++
		c.Close()
	}
	if counts["v1"] < 30 || counts["v2"] < 30 || counts["root"] != 0 {
		t.Fatalf("split per flow: %v", counts)
	}
}

func errDeadline(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errors.New("not a timeout")
}

// TestTCPIdleTimeout: a relayed connection on which nothing moves for the
// idle timeout is closed; one where bytes keep flowing in one direction
// only is not.
func TestTCPIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	// The backend greets, then ticks every 50ms while told to ("tick\n"),
	// and otherwise stays silent.
	l, err := net.Listen("tcp", backend+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					n := 1
					if sc.Text() == "tick" {
						n = 16 // 800ms of one-way traffic: longer than idle
					}
					for i := 0; i < n; i++ {
						if _, err := io.WriteString(c, "t\n"); err != nil {
							return
						}
						time.Sleep(50 * time.Millisecond)
					}
				}
			}()
		}
	}()
	d := deps(t, l4Config(config.ProtocolTCP, int32(l.Addr().(*net.TCPAddr).Port)))
	d.Runtime.Load().TCP[1].Service.TCPIdleTimeout = idle
	_, addr := startTCP(t, d)

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(apiIP)}}).Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		return c, bufio.NewReader(c)
	}

	// Quiet both ways: closed after about idle.
	c, br := dial()
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := br.ReadString('\n'); err != io.EOF {
		t.Fatalf("idle connection: read %v, want EOF from the proxy closing it", err)
	}
	if d := time.Since(start); d < idle-50*time.Millisecond || d > idle+time.Second {
		t.Fatalf("idle connection closed after %v, want about %v", d, idle)
	}

	// Bytes flowing one way (to the client) keep it open past idle.
	c, br = dial()
	if _, err := io.WriteString(c, "tick\n"); err != nil {
		t.Fatal(err)
	}
	got := 0
	start = time.Now()
	for {
		if _, err := br.ReadString('\n'); err != nil {
			break
		}
		got++
	}
	if got != 16 {
		t.Fatalf("one-way stream cut after %d of 16 lines (%v); the client side being quiet is not idleness", got, time.Since(start))
	}
}
