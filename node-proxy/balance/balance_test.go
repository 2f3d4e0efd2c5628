package balance

import (
	"net/netip"
	"testing"
	"time"
)

func ep(ip, zone string, ready bool) *Endpoint {
	a := netip.AddrPortFrom(netip.MustParseAddr(ip), 80)
	return &Endpoint{Addr: a, HostPort: a.String(), Zone: zone, Ready: ready, State: &State{}}
}

var noOutlier = Outlier{}

func count(p *Pool, n int, now int64, avoid *Endpoint) map[*Endpoint]int {
	m := map[*Endpoint]int{}
	for i := 0; i < n; i++ {
		m[p.Pick(now, avoid)]++
	}
	return m
}

func TestPreferenceTiers(t *testing.T) {
	local := ep("10.0.0.1", "z1", true)
	remote := ep("10.0.0.2", "z2", true)
	notReady := ep("10.0.0.3", "z1", false)
	cases := []struct {
		name string
		eps  []*Endpoint
		zone string
		want *Endpoint
	}{
		{"same zone preferred", []*Endpoint{remote, local, notReady}, "z1", local},
		{"no zone preference: ready only", []*Endpoint{notReady, local}, "", local},
		{"other zone when local missing", []*Endpoint{remote, notReady}, "z1", remote},
		{"not ready as last resort", []*Endpoint{notReady}, "z1", notReady},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPool(tc.eps, tc.zone, noOutlier)
			got := count(p, 200, 0, nil)
			if got[tc.want] != 200 {
				t.Fatalf("want all 200 picks on %s, got %v", tc.want.HostPort, got)
			}
		})
	}
	if NewPool(nil, "", noOutlier).Pick(0, nil) != nil {
		t.Fatal("empty pool must pick nil")
	}
}

func TestLeastOutstandingWins(t *testing.T) {
	a, b := ep("10.0.0.1", "", true), ep("10.0.0.2", "", true)
	p := NewPool([]*Endpoint{a, b}, "", noOutlier)
	for i := 0; i < 5; i++ {
		Start(a)
	}
	// With two endpoints P2C always compares both: the idle one must win.
	if got := count(p, 100, 0, nil); got[b] != 100 {
		t.Fatalf("busy endpoint picked: %v", got)
	}
	for i := 0; i < 5; i++ {
		Finish(a)
	}
	if got := count(p, 1000, 0, nil); got[a] < 300 || got[b] < 300 {
		t.Fatalf("idle endpoints should share load: a=%d b=%d", got[a], got[b])
	}
}

func TestAvoid(t *testing.T) {
	a, b := ep("10.0.0.1", "", true), ep("10.0.0.2", "", true)
	p := NewPool([]*Endpoint{a, b}, "", noOutlier)
	if got := count(p, 100, 0, a); got[b] != 100 {
		t.Fatalf("avoided endpoint picked: %v", got)
	}
	single := NewPool([]*Endpoint{a}, "", noOutlier)
	if single.Pick(0, a) != a {
		t.Fatal("the only endpoint must be used even when avoided")
	}
}

func TestOutlierEjectionGrows(t *testing.T) {
	a, b, c := ep("10.0.0.1", "", true), ep("10.0.0.2", "", true), ep("10.0.0.3", "", true)
	p := NewPool([]*Endpoint{a, b, c}, "", Outlier{Consecutive: 3, Base: time.Second, Max: 4 * time.Second, MaxEjectedPercent: 50})
	var ejections []time.Duration
	p.OnEject = func(e *Endpoint, d time.Duration) { ejections = append(ejections, d) }
	now := int64(1e12)
	fail := func(e *Endpoint, n int) (d time.Duration) {
		for i := 0; i < n; i++ {
			d = p.Report(e, false, now)
		}
		return d
	}
	if d := fail(a, 2); d != 0 || a.Ejected(now) {
		t.Fatal("ejected before 3 consecutive failures")
	}
	p.Report(a, true, now) // success resets the streak
	if d := fail(a, 2); d != 0 {
		t.Fatal("success did not reset the failure streak")
	}
	if d := fail(a, 1); d != time.Second || !a.Ejected(now) {
		t.Fatalf("first ejection should be 1s, got %v", d)
	}
	if got := count(p, 200, now, nil); got[a] != 0 {
		t.Fatalf("ejected endpoint picked %d times", got[a])
	}
	// Second endpoint would make 2/3 > 50% ejected: refused.
	if d := fail(b, 3); d != 0 || b.Ejected(now) {
		t.Fatal("max ejected percent not honoured")
	}
	// After the ejection ends, the next one lasts twice as long, then capped.
	for _, want := range []time.Duration{2 * time.Second, 4 * time.Second, 4 * time.Second} {
		now += int64(5 * time.Second)
		if a.Ejected(now) {
			t.Fatal("ejection did not expire")
		}
		if d := fail(a, 3); d != want {
			t.Fatalf("ejection interval %v, want %v", d, want)
		}
	}
	if len(ejections) != 4 {
		t.Fatalf("OnEject called %d times, want 4", len(ejections))
	}
	// Healthy for longer than Max: history forgotten, back to Base.
	now += int64(20 * time.Second)
	p.Report(a, true, now)
	if d := fail(a, 3); d != time.Second {
		t.Fatalf("history not forgotten: %v", d)
	}
}

func TestPanicModeWhenAllEjected(t *testing.T) {
	a := ep("10.0.0.1", "", true)
	p := NewPool([]*Endpoint{a}, "", Outlier{Consecutive: 1, Base: time.Minute, Max: time.Hour, MaxEjectedPercent: 100})
	p.Report(a, false, 1)
	if !a.Ejected(2) {
		t.Fatal("not ejected")
	}
	if p.Pick(2, nil) != a {
		t.Fatal("with everything ejected the pool must still pick")
	}
}

func TestSplitWeights(t *testing.T) {
	s := NewSplit([]string{"v1", "v2", "off"}, []uint32{80, 20, 0})
	got := map[string]int{}
	const n = 100000
	for i := 0; i < n; i++ {
		got[s.Choose()]++
	}
	if got["off"] != 0 {
		t.Fatal("weight 0 chosen")
	}
	if r := float64(got["v1"]) / n; r < 0.78 || r > 0.82 {
		t.Fatalf("v1 share %.3f, want 0.80±0.02", r)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	eps := []*Endpoint{ep("10.0.0.1", "z", true), ep("10.0.0.2", "z", true), ep("10.0.0.3", "y", true)}
	p := NewPool(eps, "z", noOutlier)
	s := NewSplit([]*Pool{p, p}, []uint32{1, 1})
	if a := testing.AllocsPerRun(1000, func() { s.Choose().Pick(0, eps[0]) }); a != 0 {
		t.Fatalf("pick allocates %.1f times", a)
	}
}

func BenchmarkPick(b *testing.B) {
	var eps []*Endpoint
	for i := 0; i < 16; i++ {
		eps = append(eps, ep(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}).String(), "", true))
	}
	p := NewPool(eps, "", noOutlier)
	b.ReportAllocs()
	for b.Loop() {
		e := p.Pick(0, nil)
		Start(e)
		Finish(e)
	}
}
