package webhook

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func leafOf(t *testing.T, data map[string][]byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(data[KeyTLSCert])
	if b == nil {
		t.Fatal("no tls.crt")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEnsure walks the Secret's life: created when missing, left alone when
// good, the serving certificate reissued from the same CA when it nears
// expiry or lacks a required name, everything replaced when the data is
// garbage. (The real-apiserver test in controller/app covers the wiring.)
func TestEnsure(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &Certs{Client: client, Namespace: "trellis-system", Secret: "hook", DNSNames: ServiceDNSNames("trellis-controller", "trellis-system"),
		Now: func() time.Time { return now }}
	secret := func() map[string][]byte {
		s, err := client.CoreV1().Secrets("trellis-system").Get(ctx, "hook", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s.Data
	}
	steps := []struct {
		name      string
		before    func()
		wrote     bool
		sameCA    bool
		sameLeaf  bool
		wantNames int
	}{
		{"missing: created", func() {}, true, false, false, 4},
		{"good: untouched", func() {}, false, true, true, 4},
		{"near expiry: leaf renewed", func() { now = now.Add(leafValidity - renewBefore + time.Hour) }, true, true, false, 4},
		{"new IP required: leaf reissued", func() { c.IPs = []net.IP{net.IPv4(127, 0, 0, 1)} }, true, true, false, 4},
		{"garbage: replaced", func() {
			s, _ := client.CoreV1().Secrets("trellis-system").Get(ctx, "hook", metav1.GetOptions{})
			s.Data[KeyCACert] = []byte("not a certificate")
			if _, err := client.CoreV1().Secrets("trellis-system").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}, true, false, false, 4},
	}
	var prev map[string][]byte
	for _, st := range steps {
		st.before()
		wrote, err := c.Ensure(ctx)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		data := secret()
		if wrote != st.wrote {
			t.Errorf("%s: wrote %v, want %v", st.name, wrote, st.wrote)
		}
		if prev != nil {
			if got := string(prev[KeyCACert]) == string(data[KeyCACert]); got != st.sameCA {
				t.Errorf("%s: same CA %v, want %v", st.name, got, st.sameCA)
			}
			if got := string(prev[KeyTLSCert]) == string(data[KeyTLSCert]); got != st.sameLeaf {
				t.Errorf("%s: same leaf %v, want %v", st.name, got, st.sameLeaf)
			}
		}
		leaf := leafOf(t, data)
		if len(leaf.DNSNames) != st.wantNames || !c.good(leaf, mustCA(t, data), now) {
			t.Errorf("%s: leaf names %v, IPs %v, not after %s: not acceptable", st.name, leaf.DNSNames, leaf.IPAddresses, leaf.NotAfter)
		}
		if string(c.CABundle()) != string(data[KeyCACert]) {
			t.Errorf("%s: CABundle is not the Secret's CA", st.name)
		}
		if crt, err := c.GetCertificate(nil); err != nil || string(crt.Certificate[0]) != string(leaf.Raw) {
			t.Errorf("%s: serving certificate is not the Secret's: %v", st.name, err)
		}
		prev = data
	}
}

func mustCA(t *testing.T, data map[string][]byte) *x509.Certificate {
	t.Helper()
	ca, _, err := parsePair(data[KeyCACert], data[KeyCAKey])
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestEnsureLosesCreateRace: a replica that finds the Secret missing but
// loses the create to another replica uses the winner's certificate.
func TestEnsureLosesCreateRace(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	winner := &Certs{Namespace: "ns", Secret: "hook", DNSNames: []string{"a.ns.svc"}}
	data, _, err := winner.issue(nil)
	if err != nil {
		t.Fatal(err)
	}
	raced := false
	client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if raced {
			return false, nil, nil
		}
		raced = true
		// The other replica's create lands first.
		if err := client.Tracker().Add(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "hook"}, Data: data}); err != nil {
			t.Fatal(err)
		}
		return true, nil, apierrors.NewAlreadyExists(corev1.Resource("secrets"), "hook")
	})
	loser := &Certs{Client: client, Namespace: "ns", Secret: "hook", DNSNames: []string{"a.ns.svc"}}
	wrote, err := loser.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !raced || wrote || string(loser.CABundle()) != string(data[KeyCACert]) {
		t.Fatalf("raced %v, wrote %v: the loser of the create race must serve the winner's CA", raced, wrote)
	}
}
