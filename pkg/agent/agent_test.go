package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/iscsi"
	"github.com/petfabric/petfabric/pkg/iscsi/probetest"
	"github.com/petfabric/petfabric/pkg/placement"
)

const (
	testNS    = "petfabric-system"
	initiator = "iqn.2024-01.io.petfabric.test:node-a"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestParseBackstores(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		want    []Backstore
		wantErr string
	}{
		{
			name: "yaml with default port, duplicates and CHAP",
			doc: `
backstores:
  "172.16.0.20:7717":
    portals: ["10.2.1.5"]
  "172.16.0.10:7717":
    portals: ["10.1.1.5:3260", "10.1.1.6:3261", "10.1.1.5"]
    discoveryCHAP:
      usernameFile: /u
      passwordFile: /p
`,
			want: []Backstore{
				{Server: "172.16.0.10:7717", Portals: []string{"10.1.1.5:3260", "10.1.1.6:3261"}, CHAP: &CHAPFiles{UsernameFile: "/u", PasswordFile: "/p"}},
				{Server: "172.16.0.20:7717", Portals: []string{"10.2.1.5:3260"}},
			},
		},
		{
			name: "json, IPv6 portal",
			doc:  `{"backstores": {"[fd00::10]:7717": {"portals": ["[fd00::5]:3260", "fd00::6"]}}}`,
			want: []Backstore{{Server: "[fd00::10]:7717", Portals: []string{"[fd00::5]:3260", "[fd00::6]:3260"}}},
		},
		{name: "empty", doc: `backstores: {}`, wantErr: "lists no backstores"},
		{name: "misspelt field", doc: "backstores:\n  a:1:\n    portal: [x]\n", wantErr: "unknown field"},
		{name: "key without port", doc: "backstores:\n  datera.example:\n    portals: [10.0.0.1]\n", wantErr: "must be the backstoreServer host:port"},
		{name: "no portals", doc: "backstores:\n  \"h:1\":\n    portals: []\n", wantErr: "no portals"},
		{name: "CHAP without password file", doc: "backstores:\n  \"h:1\":\n    portals: [10.0.0.1]\n    discoveryCHAP: {usernameFile: /u}\n", wantErr: "needs usernameFile and passwordFile"},
		{name: "half mutual CHAP", doc: "backstores:\n  \"h:1\":\n    portals: [10.0.0.1]\n    discoveryCHAP: {usernameFile: /u, passwordFile: /p, targetUsernameFile: /tu}\n", wantErr: "mutual discoveryCHAP"},
		{name: "not yaml", doc: "backstores: [", wantErr: "parse backstores file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBackstores([]byte(tc.doc))
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestReadInitiatorName(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "initiatorname.iscsi")
	require.NoError(t, os.WriteFile(good, []byte("## DO NOT EDIT\n# comment\nInitiatorName=iqn.1993-08.org.debian:01:abc123\n"), 0o600))
	name, err := ReadInitiatorName(good)
	require.NoError(t, err)
	assert.Equal(t, "iqn.1993-08.org.debian:01:abc123", name)

	bad := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(bad, []byte("# nothing\n"), 0o600))
	_, err = ReadInitiatorName(bad)
	require.ErrorContains(t, err, "no InitiatorName= line")
	_, err = ReadInitiatorName(filepath.Join(dir, "missing"))
	require.Error(t, err)
}

func writeRecord(t testing.TB, dir, id, phase string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, id+".json"), []byte(`{"version":1,"volumeID":"`+id+`","phase":"`+phase+`"}`), 0o644))
}

// fakeProber answers from a table and counts calls.
type fakeProber struct {
	mu    sync.Mutex
	calls atomic.Int64
	down  map[string]error
	seen  []iscsi.ProbeOptions
}

func (f *fakeProber) probe(_ context.Context, portal string, opts iscsi.ProbeOptions) (*iscsi.ProbeResult, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, opts)
	if err := f.down[portal]; err != nil {
		return nil, err
	}
	return &iscsi.ProbeResult{Portal: portal, RTT: 250 * time.Microsecond}, nil
}

func getReport(t testing.TB, client *fake.Clientset, node string) (*coordinationv1.Lease, *placement.Report) {
	t.Helper()
	l, err := client.CoordinationV1().Leases(testNS).Get(context.Background(), placement.LeaseName(node), metav1.GetOptions{})
	if err != nil {
		return nil, nil
	}
	raw, ok := l.Annotations[placement.ReportAnnotation]
	if !ok {
		return l, nil
	}
	r, err := placement.DecodeReport(raw)
	require.NoError(t, err)
	return l, r
}

func startAgent(t *testing.T, opts Options) (*Agent, context.CancelFunc, chan error) {
	t.Helper()
	a, err := New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop")
		}
	})
	return a, cancel, done
}

func TestAgentPublishesReport(t *testing.T) {
	client := fake.NewClientset()
	stateDir := t.TempDir()
	prober := &fakeProber{down: map[string]error{
		"10.1.1.6:3260": &iscsi.ProbeError{Portal: "10.1.1.6:3260", Step: "connect", Kind: iscsi.ErrConnRefused, Err: errors.New("dial tcp: connection refused")},
	}}
	m := NewMetrics()
	a, _, _ := startAgent(t, Options{
		Node: "node-a", Initiator: initiator, StateDir: stateDir, Leases: client.CoordinationV1().Leases(testNS),
		Backstores: []Backstore{{Server: "172.16.0.10:7717", Portals: []string{"10.1.1.5:3260", "10.1.1.6:3260"}}},
		Interval:   100 * time.Millisecond, TTL: 5 * time.Second, AttachPoll: 20 * time.Millisecond,
		Probe: prober.probe, Log: quietLog(), Metrics: m,
	})

	var lease *coordinationv1.Lease
	var report *placement.Report
	require.Eventually(t, func() bool { lease, report = getReport(t, client, "node-a"); return report != nil }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, "node-a", *lease.Spec.HolderIdentity)
	assert.Equal(t, int32(5), *lease.Spec.LeaseDurationSeconds)
	assert.NotNil(t, lease.Spec.RenewTime)
	assert.Equal(t, placement.LeaseManagedByValue, lease.Labels[placement.LeaseManagedByLabel])
	assert.Equal(t, placement.LeaseComponentValue, lease.Labels[placement.LeaseComponentLabel])
	assert.Equal(t, initiator, report.Initiator)
	assert.Equal(t, []string{}, report.Attached)
	portals := report.Backstores["172.16.0.10:7717"].Portals
	assert.Equal(t, placement.PortalReport{OK: true, RTTMicros: 250}, portals["10.1.1.5:3260"])
	assert.Equal(t, placement.PortalReport{Error: "connection refused"}, portals["10.1.1.6:3260"])

	// The extender's reading of this Lease: fresh once seen, portal 2 down.
	nr, ok := placement.NodeReportFromLease(lease)
	require.True(t, ok)
	seen := time.Now()
	nr.Observe(nil, seen, 0)
	assert.True(t, nr.Fresh(seen))

	// Renewed every round: a renewTime the extender has not seen before, which is what
	// keeps the report fresh on the extender's clock (whatever the node's clock says).
	first := lease.Spec.RenewTime.Time
	require.Eventually(t, func() bool {
		l, _ := getReport(t, client, "node-a")
		return l.Spec.RenewTime.After(first)
	}, 5*time.Second, 20*time.Millisecond)
	renewed, _ := getReport(t, client, "node-a")
	next, ok := placement.NodeReportFromLease(renewed)
	require.True(t, ok)
	later := seen.Add(10 * time.Second) // past the first observation's TTL of 5s
	next.Observe(nr, later, 0)
	assert.Equal(t, later, next.ObservedAt, "a new renewTime is a renewal")
	assert.True(t, next.Fresh(later))

	// A volume attached by the driver shows up without waiting for a probe round.
	writeRecord(t, stateDir, "pf-vol-1", "mounted")
	require.Eventually(t, func() bool {
		_, r := getReport(t, client, "node-a")
		return len(r.Attached) == 1 && r.Attached[0] == "pf-vol-1"
	}, 5*time.Second, 10*time.Millisecond)
	writeRecord(t, stateDir, "pf-vol-1", "detached")
	require.Eventually(t, func() bool { _, r := getReport(t, client, "node-a"); return len(r.Attached) == 0 }, 5*time.Second, 10*time.Millisecond)

	assert.True(t, a.Healthy())
	assert.Equal(t, 1.0, testutil.ToFloat64(m.up.WithLabelValues("172.16.0.10:7717", "10.1.1.5:3260")))
	assert.Equal(t, 0.0, testutil.ToFloat64(m.up.WithLabelValues("172.16.0.10:7717", "10.1.1.6:3260")))
	assert.Positive(t, testutil.ToFloat64(m.writes.WithLabelValues("success")))
	prober.mu.Lock()
	assert.Equal(t, initiator, prober.seen[0].InitiatorName)
	assert.Nil(t, prober.seen[0].CHAP)
	prober.mu.Unlock()
}

// TestAgentKeepsProbingThroughApiserverOutage: every Lease call fails for a while; the
// probe loop keeps its pace, and the newest report lands as soon as the apiserver is back.
func TestAgentKeepsProbingThroughApiserverOutage(t *testing.T) {
	client := fake.NewClientset()
	var outage atomic.Bool
	outage.Store(true)
	client.PrependReactor("*", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if outage.Load() {
			return true, nil, apierrors.NewServiceUnavailable("apiserver down for the test")
		}
		return false, nil, nil
	})
	prober := &fakeProber{}
	m := NewMetrics()
	startAgent(t, Options{
		Node: "node-a", Initiator: initiator, StateDir: t.TempDir(), Leases: client.CoordinationV1().Leases(testNS),
		Backstores: []Backstore{{Server: "172.16.0.10:7717", Portals: []string{"10.1.1.5:3260"}}},
		Interval:   50 * time.Millisecond, Jitter: 0.01, TTL: 5 * time.Second,
		Probe: prober.probe, Log: quietLog(), Metrics: m,
	})
	require.Eventually(t, func() bool { return prober.calls.Load() >= 8 }, 5*time.Second, 10*time.Millisecond,
		"probing continues while nothing can be published")
	assert.Positive(t, testutil.ToFloat64(m.writes.WithLabelValues("error")))
	assert.Zero(t, testutil.ToFloat64(m.writes.WithLabelValues("success")))

	before := time.Now()
	outage.Store(false)
	var report *placement.Report
	require.Eventually(t, func() bool { _, report = getReport(t, client, "node-a"); return report != nil }, 5*time.Second, 10*time.Millisecond)
	assert.WithinDuration(t, before, report.ProbedAt, time.Second, "the newest report is published, not the first one")
}

// TestAgentAdoptsAndRecreatesLease: a Lease left by an earlier agent is updated in place
// (same object, new holder data), and one deleted behind the agent's back is recreated.
func TestAgentAdoptsAndRecreatesLease(t *testing.T) {
	old := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: placement.LeaseName("node-a"), Namespace: testNS, UID: "old-uid",
			Annotations: map[string]string{"keep": "me"}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("node-a"), LeaseDurationSeconds: ptr.To(int32(1))},
	}
	client := fake.NewClientset(old)
	startAgent(t, Options{
		Node: "node-a", Initiator: initiator, StateDir: t.TempDir(), Leases: client.CoordinationV1().Leases(testNS),
		Backstores: []Backstore{{Server: "172.16.0.10:7717", Portals: []string{"10.1.1.5:3260"}}},
		Interval:   50 * time.Millisecond, TTL: 7 * time.Second, Probe: (&fakeProber{}).probe, Log: quietLog(),
	})
	require.Eventually(t, func() bool { _, r := getReport(t, client, "node-a"); return r != nil }, 5*time.Second, 10*time.Millisecond)
	l, _ := getReport(t, client, "node-a")
	assert.Equal(t, "old-uid", string(l.UID), "updated, not replaced")
	assert.Equal(t, "me", l.Annotations["keep"])
	assert.Equal(t, int32(7), *l.Spec.LeaseDurationSeconds)

	require.NoError(t, client.CoordinationV1().Leases(testNS).Delete(context.Background(), l.Name, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { _, r := getReport(t, client, "node-a"); return r != nil }, 5*time.Second, 10*time.Millisecond)
}

func TestNewValidates(t *testing.T) {
	leases := fake.NewClientset().CoordinationV1().Leases(testNS)
	bs := []Backstore{{Server: "h:1", Portals: []string{"10.0.0.1:3260"}}}
	for _, tc := range []struct {
		opts Options
		err  string
	}{
		{Options{Initiator: initiator, Backstores: bs, Leases: leases}, "node name"},
		{Options{Node: "n", Backstores: bs, Leases: leases}, "initiator"},
		{Options{Node: "n", Initiator: initiator, Leases: leases}, "no backstores"},
		{Options{Node: "n", Initiator: initiator, Backstores: bs}, "Lease client"},
		{Options{Node: "n", Initiator: initiator, Backstores: bs, Leases: leases, TTL: time.Millisecond}, "one-second resolution"},
	} {
		_, err := New(tc.opts)
		require.ErrorContains(t, err, tc.err)
	}
}

// TestAgentAgainstTGTD probes a real tgtd: one portal allows this initiator with discovery
// CHAP read from files, another port is closed.
func TestAgentAgainstTGTD(t *testing.T) {
	tgt := probetest.Start(t)
	tgt.AddTarget(probetest.TargetOptions{IQN: "iqn.2024-01.io.petfabric.test:vol", Initiators: []string{initiator}})
	tgt.SetDiscoveryCHAP("agent-user", "agent-secret-123", false)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := l.Addr().String()
	require.NoError(t, l.Close())

	dir := t.TempDir()
	userFile, passFile := filepath.Join(dir, "username"), filepath.Join(dir, "password")
	require.NoError(t, os.WriteFile(userFile, []byte("agent-user\n"), 0o600))
	require.NoError(t, os.WriteFile(passFile, []byte("agent-secret-123\n"), 0o600))
	backstores, err := ParseBackstores([]byte(`{"backstores": {"127.0.0.1:7717": {"portals": ["` + tgt.Portal + `", "` + closed + `"],
		"discoveryCHAP": {"usernameFile": "` + userFile + `", "passwordFile": "` + passFile + `"}}}}`))
	require.NoError(t, err)

	client := fake.NewClientset()
	startAgent(t, Options{
		Node: "node-a", Initiator: initiator, StateDir: t.TempDir(), Leases: client.CoordinationV1().Leases(testNS),
		Backstores: backstores, Interval: 200 * time.Millisecond, ProbeTimeout: 2 * time.Second, Log: quietLog(),
	})
	var report *placement.Report
	require.Eventually(t, func() bool { _, report = getReport(t, client, "node-a"); return report != nil }, 10*time.Second, 20*time.Millisecond)
	portals := report.Backstores["127.0.0.1:7717"].Portals
	require.Len(t, portals, 2)
	assert.True(t, portals[tgt.Portal].OK, "tgtd portal: %+v\n%s", portals[tgt.Portal], tgt.Log())
	assert.Positive(t, portals[tgt.Portal].RTTMicros)
	assert.Equal(t, placement.PortalReport{Error: "connection refused"}, portals[closed])

	// Rotating the CHAP secret file to a wrong one turns the portal into an auth failure
	// on the next round (files are read every round).
	require.NoError(t, os.WriteFile(passFile, []byte("wrong-secret-9999"), 0o600))
	require.Eventually(t, func() bool {
		_, r := getReport(t, client, "node-a")
		p := r.Backstores["127.0.0.1:7717"].Portals[tgt.Portal]
		return !p.OK && p.Error == "authentication failed during login: authentication failure (status 0x0201)"
	}, 10*time.Second, 20*time.Millisecond)
}
