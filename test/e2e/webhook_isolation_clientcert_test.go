package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/webhook"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestWebhookIsolationClientCertificates: the webhook requires a client certificate
// (--client-ca-file), and the real kube-apiserver, started with an AdmissionConfiguration whose
// WebhookAdmissionConfiguration names a kubeconfig with a client certificate for the webhook's
// host:port, presents it: admission works end to end. A caller without a certificate, or with
// one from another CA, cannot even complete the TLS handshake, so it can post no review.
func TestWebhookIsolationClientCertificates(t *testing.T) {
	cluster.RequireBinaries(t)
	dir := t.TempDir()

	// The webhook's address must be known before the apiserver starts: its kubeconfig names
	// the credentials per webhook host:port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hostPort := ln.Addr().String()
	require.NoError(t, ln.Close())

	clientCA, err := testpki.NewCA("petfabric-webhook-client-ca")
	require.NoError(t, err)
	apiserverCert, err := clientCA.Client("kube-apiserver")
	require.NoError(t, err)
	clientCAFile := filepath.Join(dir, "client-ca.crt")
	require.NoError(t, os.WriteFile(clientCAFile, clientCA.CertPEM, 0o600))

	kubeconfig := filepath.Join(dir, "webhook-kubeconfig.yaml")
	require.NoError(t, os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
users:
- name: %q
  user:
    client-certificate-data: %s
    client-key-data: %s
`, hostPort, base64.StdEncoding.EncodeToString(apiserverCert.CertPEM), base64.StdEncoding.EncodeToString(apiserverCert.KeyPEM))), 0o600))
	admissionCfg := filepath.Join(dir, "admission.yaml")
	require.NoError(t, os.WriteFile(admissionCfg, []byte(fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: %q
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: %q
`, kubeconfig, kubeconfig)), 0o600))

	c := cluster.Start(t, cluster.Options{
		Nodes:               kwokNodes(1),
		ExtraAPIServerFlags: []string{"--admission-control-config-file=" + admissionCfg},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := c.Client
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.StorageV1().StorageClasses().Create(ctx, dateraClass("datera-gold", "127.0.0.1:7717", corev1.PersistentVolumeReclaimRetain, nil), metav1.CreateOptions{})
	require.NoError(t, err)

	w := startWebhook(t, c, mutate.Config{ClusterID: "e2e"}, func(rc *webhook.RunConfig) {
		rc.Serving.Listen = hostPort
		rc.Serving.ClientCAFile = clientCAFile
	})

	t.Run("the apiserver presents its client certificate and admission works", func(t *testing.T) {
		// registerWebhook waits until a dry-run create comes back mutated: the apiserver
		// completed the mutual-TLS handshake and got an answer.
		registerWebhook(ctx, t, c, w, admissionregistrationv1.Fail)
		_, err := cs.AppsV1().StatefulSets("shop").Create(ctx, statefulSet("shop", "web", 1, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.NoError(t, err)
		getPV(ctx, t, cs, "shop", "data-web-0")
	})

	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(w.CAPEM))
	post := func(cert *tls.Certificate) error {
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if cert != nil {
			// Always present it (crypto/tls would otherwise send nothing when the
			// certificate's issuer is not among the CAs the server asks for).
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", hostPort, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3 reports a refused client certificate on the first read, not in Dial.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", webhook.PathClaims, hostPort); err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		return fmt.Errorf("answered without a valid client certificate: %q", buf[:n])
	}

	t.Run("a caller without a client certificate is refused", func(t *testing.T) {
		err := post(nil)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "answered")
		t.Logf("refused: %v", err)
	})

	t.Run("a caller with a certificate from another CA is refused", func(t *testing.T) {
		other, err := testpki.NewCA("someone-else")
		require.NoError(t, err)
		pair, err := other.Client("kube-apiserver")
		require.NoError(t, err)
		cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
		require.NoError(t, err)
		err = post(&cert)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "answered")
		t.Logf("refused: %v", err)
	})

	t.Run("the apiserver's own certificate is accepted (control)", func(t *testing.T) {
		cert, err := tls.X509KeyPair(apiserverCert.CertPEM, apiserverCert.KeyPEM)
		require.NoError(t, err)
		err = post(&cert)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "answered", "the handshake succeeds and the webhook answers")
	})
}
