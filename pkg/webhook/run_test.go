package webhook

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/serving"
)

// When the reconcile loop fails, Run stops both servers and returns the error: the process
// exits and is restarted, instead of answering on its ports with the loop gone.
func TestRunStopsServersWhenTheLoopFails(t *testing.T) {
	ca, err := testpki.NewCA("run-ca")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	certFile, keyFile, err := pair.WriteFiles(t.TempDir(), "tls")
	require.NoError(t, err)
	addrs := make(chan [2]string, 1)
	fail := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), fake.NewClientset(), RunConfig{
			Mutate: testCfg,
			Serving: serving.Config{
				Listen: "127.0.0.1:0", HealthListen: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ShutdownTimeout: 5 * time.Second,
			},
			OnServing: func(a, h string) { addrs <- [2]string{a, h} },
			Background: func(ctx context.Context) error {
				select {
				case <-fail:
					return errors.New("leader election client gone")
				case <-ctx.Done():
					return nil
				}
			},
		})
	}()
	var a [2]string
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("not serving")
	}
	for _, addr := range a {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err, "serving on %s", addr)
		_ = c.Close()
	}
	close(fail)
	select {
	case err := <-done:
		require.EqualError(t, err, "webhook background: reconcile loop: leader election client gone")
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the loop failed")
	}
	for _, addr := range a {
		_, err := net.DialTimeout("tcp", addr, time.Second)
		require.Error(t, err, "%s still open", addr)
	}
}
