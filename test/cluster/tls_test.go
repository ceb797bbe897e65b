package cluster_test

import (
	"crypto/tls"

	"github.com/petfabric/petfabric/internal/testpki"
)

func tlsCert(p *testpki.Pair) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
