package localcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ca is a throwaway certificate authority for the test control plane.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(name string) (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ca{cert: cert, key: key, pem: pemBlock("CERTIFICATE", der)}, nil
}

// issue signs a leaf certificate; with ips it is a serving certificate,
// otherwise a client certificate for cn in orgs.
func (c *ca) issue(cn string, orgs []string, ips []net.IP, dns []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	if len(ips) > 0 || len(dns) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", kder), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// pki is every file kube-apiserver and its clients need.
type pki struct {
	dir                             string
	caFile, servingCert, servingKey string
	saKey                           string
	frontProxyCA                    string
	frontProxyCert, frontProxyKey   string
	// adminToken is the administrator's bearer token, what the control
	// plane's clients (its kubeconfig, the controller manager) present:
	// the API server verifies a client certificate's chain on every
	// request (ECDSA: 7% of its CPU in the CLI's tests), a token from
	// --token-auth-file by a map lookup.
	adminToken string
	caPEM      []byte
	cluster    *ca
}

func writePKI(dir string) (*pki, error) {
	p := &pki{dir: dir}
	write := func(name string, b []byte) (string, error) {
		path := filepath.Join(dir, name)
		return path, os.WriteFile(path, b, 0o600)
	}
	cluster, err := newCA("vllm-hpa-test-ca")
	if err != nil {
		return nil, err
	}
	p.caPEM, p.cluster = cluster.pem, cluster
	if p.caFile, err = write("ca.crt", cluster.pem); err != nil {
		return nil, err
	}
	cert, key, err := cluster.issue("kube-apiserver", nil,
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"})
	if err != nil {
		return nil, err
	}
	if p.servingCert, err = write("apiserver.crt", cert); err != nil {
		return nil, err
	}
	if p.servingKey, err = write("apiserver.key", key); err != nil {
		return nil, err
	}
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return nil, err
	}
	p.adminToken = hex.EncodeToString(token)
	// Service account tokens are signed with RSA.
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	if p.saKey, err = write("sa.key", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa))); err != nil {
		return nil, err
	}
	// The aggregator authenticates to extension API servers with the
	// front-proxy client certificate.
	fp, err := newCA("front-proxy-ca")
	if err != nil {
		return nil, err
	}
	if p.frontProxyCA, err = write("front-proxy-ca.crt", fp.pem); err != nil {
		return nil, err
	}
	fpCert, fpKey, err := fp.issue("front-proxy-client", nil, nil, nil)
	if err != nil {
		return nil, err
	}
	if p.frontProxyCert, err = write("front-proxy-client.crt", fpCert); err != nil {
		return nil, err
	}
	if p.frontProxyKey, err = write("front-proxy-client.key", fpKey); err != nil {
		return nil, err
	}
	return p, nil
}

// loopbackCert is the serving certificate of the TLS backends the control
// plane's aggregator dials (DiscoveryBackend: the fake metrics adapters),
// one for the process: ECDSA rather than httptest's RSA 2048, whose
// signature in each handshake was a tenth of the CLI suite's CPU.
var loopbackCert = sync.OnceValues(func() (tls.Certificate, error) {
	c, err := newCA("loopback-backends")
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM, keyPEM, err := c.issue("127.0.0.1", nil, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, []string{"localhost"})
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
})
