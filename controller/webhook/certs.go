package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Keys of the Secret holding the webhook's CA and serving certificate.
const (
	KeyCACert  = "ca.crt"
	KeyCAKey   = "ca.key"
	KeyTLSCert = corev1.TLSCertKey
	KeyTLSKey  = corev1.TLSPrivateKeyKey
)

// Validity of what Certs generates. The serving certificate is renewed,
// signed by the same CA, when less than renewBefore is left, so the CRDs'
// caBundle only changes when the CA itself is replaced.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
)

// ServiceDNSNames are the names a Service is reached by from the apiserver.
func ServiceDNSNames(service, namespace string) []string {
	return []string{service, service + "." + namespace, service + "." + namespace + ".svc", service + "." + namespace + ".svc.cluster.local"}
}

// Certs keeps the webhook's serving certificate in a Secret so that every
// replica serves a certificate from the same CA: the first replica to find
// the Secret missing creates it, the others read it (a lost create race
// reads the winner's). A certificate close to expiry, or one lacking a
// required name, is reissued by whichever replica notices first, with an
// optimistic-concurrency update.
type Certs struct {
	Client    kubernetes.Interface
	Namespace string
	Secret    string
	// DNSNames and IPs must all be in the serving certificate.
	DNSNames []string
	IPs      []net.IP
	// Now is the clock (tests); default time.Now.
	Now func() time.Time

	mu   sync.Mutex
	cert *tls.Certificate
	ca   []byte // PEM
}

func (c *Certs) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// GetCertificate is tls.Config.GetCertificate: the current serving
// certificate, or an error before the first successful Ensure.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert == nil {
		return nil, errors.New("conversion webhook: serving certificate not loaded yet")
	}
	return c.cert, nil
}

// CABundle is the PEM CA the apiserver must trust (nil before Ensure).
func (c *Certs) CABundle() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ca
}

// Ensure loads the certificate from the Secret, creating or renewing it
// when needed. It reports whether it wrote the Secret.
func (c *Certs) Ensure(ctx context.Context) (wrote bool, err error) {
	for attempt := 0; attempt < 5; attempt++ {
		sec, err := c.Client.CoreV1().Secrets(c.Namespace).Get(ctx, c.Secret, metav1.GetOptions{})
		missing := apierrors.IsNotFound(err)
		if err != nil && !missing {
			return false, fmt.Errorf("webhook Secret %s/%s: %w", c.Namespace, c.Secret, err)
		}
		var data map[string][]byte
		if !missing {
			data = sec.Data
		}
		next, changed, err := c.issue(data)
		if err != nil {
			return false, fmt.Errorf("webhook Secret %s/%s: %w", c.Namespace, c.Secret, err)
		}
		if !changed {
			return false, c.load(next)
		}
		if missing {
			s := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: c.Secret, Namespace: c.Namespace,
					Labels: map[string]string{"app.kubernetes.io/managed-by": "trellis-controller"}},
				Type: corev1.SecretTypeTLS,
				Data: next,
			}
			_, err = c.Client.CoreV1().Secrets(c.Namespace).Create(ctx, s, metav1.CreateOptions{})
		} else {
			s := sec.DeepCopy()
			s.Data = next
			_, err = c.Client.CoreV1().Secrets(c.Namespace).Update(ctx, s, metav1.UpdateOptions{})
		}
		if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
			continue // another replica wrote it first: use theirs
		}
		if err != nil {
			return false, fmt.Errorf("writing webhook Secret %s/%s: %w", c.Namespace, c.Secret, err)
		}
		return true, c.load(next)
	}
	return false, fmt.Errorf("webhook Secret %s/%s: still changing after 5 attempts", c.Namespace, c.Secret)
}

func (c *Certs) load(data map[string][]byte) error {
	cert, err := tls.X509KeyPair(data[KeyTLSCert], data[KeyTLSKey])
	if err != nil {
		return fmt.Errorf("webhook Secret %s/%s: %w", c.Namespace, c.Secret, err)
	}
	c.mu.Lock()
	c.cert, c.ca = &cert, bytes.Clone(data[KeyCACert])
	c.mu.Unlock()
	return nil
}

// issue returns the Secret data to use: data itself when it is good, a new
// serving certificate from the same CA when only that needs replacing, or a
// new CA and certificate.
func (c *Certs) issue(data map[string][]byte) (map[string][]byte, bool, error) {
	now := c.now()
	ca, caKey, caErr := parsePair(data[KeyCACert], data[KeyCAKey])
	if caErr == nil && (now.Add(renewBefore).After(ca.NotAfter) || !ca.IsCA) {
		caErr = errors.New("CA expires soon")
	}
	if caErr == nil {
		leaf, _, err := parsePair(data[KeyTLSCert], data[KeyTLSKey])
		if err == nil && c.good(leaf, ca, now) {
			return data, false, nil
		}
	} else {
		var err error
		if ca, caKey, err = newCA(now); err != nil {
			return nil, false, err
		}
	}
	certPEM, keyPEM, err := c.newLeaf(ca, caKey, now)
	if err != nil {
		return nil, false, err
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return nil, false, err
	}
	return map[string][]byte{
		KeyCACert:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		KeyCAKey:   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER}),
		KeyTLSCert: certPEM,
		KeyTLSKey:  keyPEM,
	}, true, nil
}

// good: leaf is signed by ca, valid for long enough, and names everything
// required.
func (c *Certs) good(leaf, ca *x509.Certificate, now time.Time) bool {
	if now.Add(renewBefore).After(leaf.NotAfter) || leaf.CheckSignatureFrom(ca) != nil {
		return false
	}
	for _, n := range c.DNSNames {
		if !slices.Contains(leaf.DNSNames, n) {
			return false
		}
	}
	for _, ip := range c.IPs {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

func parsePair(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("missing PEM data")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, errors.New("key does not match certificate")
	}
	return cert, key, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "trellis-controller webhook CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func (c *Certs) newLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(leafValidity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	cn := "trellis-controller"
	if len(c.DNSNames) > 0 {
		cn = c.DNSNames[len(c.DNSNames)-1]
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     c.DNSNames,
		IPAddresses:  c.IPs,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// Listener wraps l in TLS with the certificate Ensure loaded (re-read on
// every handshake, so a renewal takes effect without a restart).
func (c *Certs) Listener(l net.Listener) net.Listener {
	return tls.NewListener(l, &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}, GetCertificate: c.GetCertificate})
}
