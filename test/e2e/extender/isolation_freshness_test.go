package extendere2e

import (
	"context"
	"github.com/petfabric/petfabric/test/fixtures"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/pkg/serving"
	"github.com/petfabric/petfabric/test/cluster"
)

// runWithMaxReportTTL runs pkg/extender.Run (what cmd/extender runs) in this process with
// --max-report-ttl set (0: the default); its log goes to extender.log in the cluster's
// directory, and its tail is shown when the test fails.
func runWithMaxReportTTL(maxTTL time.Duration) extenderRunner {
	return func(t *testing.T, c *cluster.Cluster, api, health net.Listener, certFile, keyFile, caFile string) {
		t.Helper()
		logFile, err := os.Create(filepath.Join(c.Dir, "extender.log"))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- extender.Run(ctx, c.Client, extender.Config{
				Namespace: releaseNS, MaxReportTTL: maxTTL, Serving: serving.Config{
					Listener: api, HealthListener: health,
					CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile,
					Logger: slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})),
				},
			})
		}()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(20 * time.Second):
				t.Error("extender did not stop")
			}
			_ = logFile.Close()
			if t.Failed() {
				if b, err := os.ReadFile(logFile.Name()); err == nil {
					t.Logf("extender log (tail):\n%s", fixtures.Tail(string(b), 30))
				}
			}
		})
	}
}

// TestIsolationReportFreshnessIsJudgedByObservation: the extender, reading report Leases
// from the real apiserver through its informer, judges freshness by when it saw each
// Lease renewed, never by the node-written renewTime. Three nodes:
//   - liar: renewTime an hour in the future, never renewed again;
//   - greedy: declares leaseDurationSeconds of a day (the extender caps it at 3s), never
//     renewed again;
//   - slow-clock: its clock runs 10 minutes behind, its agent renews every second.
//
// After a few seconds only slow-clock may host a pod with a Datera volume. When its agent
// stops too, no node may.
func TestIsolationReportFreshnessIsJudgedByObservation(t *testing.T) {
	const maxTTL = 3 * time.Second
	e := startWith(t, runWithMaxReportTTL(maxTTL), true, "liar", "greedy", "slow-clock")

	e.report(t, "liar", reachable, -time.Hour, maxTTL) // renewed "an hour from now"
	e.report(t, "greedy", reachable, 0, 24*time.Hour)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	e.report(t, "slow-clock", reachable, 10*time.Minute, maxTTL)
	go func() { // slow-clock's agent: a round a second, stamped with a clock 10 min behind
		defer wg.Done()
		leases := e.client.CoordinationV1().Leases(releaseNS)
		for {
			l, err := leases.Get(ctx, "petfabric-node-slow-clock", metav1.GetOptions{})
			if err == nil {
				l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now().Add(-10 * time.Minute)}
				_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
			}
			if err != nil && ctx.Err() == nil {
				t.Errorf("renewing slow-clock's Lease: %v", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	t.Cleanup(func() { stop(); wg.Wait() })

	time.Sleep(maxTTL + 1500*time.Millisecond) // liar and greedy were seen once, that long ago
	e.volume(t, "first", "pf-first", nil, true)
	e.pod(t, "first", "first")
	require.Equal(t, "slow-clock", e.waitScheduled(t, "first"),
		"only slow-clock renews; liar's future renewTime and greedy's day-long TTL must not keep them fresh")

	// slow-clock's agent stops: nothing is fresh any more, and the event says why.
	stop()
	wg.Wait()
	time.Sleep(maxTTL + 1500*time.Millisecond)
	e.volume(t, "second", "pf-second", nil, true)
	e.pod(t, "second", "second")
	msg := e.failedScheduling(t, "second",
		"0/3 nodes are available: 3 reachability report is stale (no renewal seen within its 3s validity)",
	)
	t.Logf("FailedScheduling: %s", msg)
	e.requireUnscheduled(t, "second")

	// The Leases as stored say what the nodes claimed; the extender did not believe them.
	l, err := e.client.CoordinationV1().Leases(releaseNS).Get(e.ctx, "petfabric-node-greedy", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, ptr.To(int32(86400)), l.Spec.LeaseDurationSeconds)
}
