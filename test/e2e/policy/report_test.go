package policy

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/agent"
	"github.com/petfabric/petfabric/pkg/iscsi"
	"github.com/petfabric/petfabric/pkg/placement"
)

const nodeNameExtra = "authentication.kubernetes.io/node-name"

// agentPod creates the node agent's Pod on node (as the DaemonSet would) and returns a token
// bound to it, as kubelet projects it into the Pod.
func (e *env) agentPod(name, node string) string {
	e.t.Helper()
	p, err := e.c.Client.CoreV1().Pods(releaseNS).Create(e.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName: agentSA,
			NodeName:           node,
			Containers:         []corev1.Container{{Name: "agent", Image: "registry.example/petfabric:test"}},
		},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err, "create agent Pod %s on %s", name, node)
	return e.token(releaseNS, agentSA, &authenticationv1.BoundObjectReference{
		APIVersion: "v1", Kind: "Pod", Name: p.Name, UID: p.UID,
	})
}

// reportLease is a report Lease for node as the agent writes it.
func reportLease(node string, attached ...string) *coordinationv1.Lease {
	r := &placement.Report{
		Version: placement.ReportVersion, Initiator: "iqn.2024-01.io.petfabric:" + node,
		Backstores: map[string]placement.BackstoreReport{"datera.example:7717": {Portals: map[string]placement.PortalReport{
			"192.0.2.10:3260": {OK: true, RTTMicros: 200},
		}}},
		Attached: append([]string{}, attached...), ProbedAt: time.Now().UTC(),
	}
	enc, err := r.Encode()
	if err != nil {
		panic(err)
	}
	now := metav1.NewMicroTime(time.Now())
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:        placement.LeaseName(node),
			Labels:      map[string]string{placement.LeaseManagedByLabel: placement.LeaseManagedByValue, placement.LeaseComponentLabel: placement.LeaseComponentValue},
			Annotations: map[string]string{placement.ReportAnnotation: enc},
		},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now, AcquireTime: &now},
	}
}

func createLease(ctx context.Context, cs kubernetes.Interface, l *coordinationv1.Lease, dry bool) error {
	_, err := cs.CoordinationV1().Leases(releaseNS).Create(ctx, l.DeepCopy(), metav1.CreateOptions{DryRun: dryRun(dry)})
	return err
}

// rewriteLease reads Lease name as cs and writes it back with fresh as its content.
func rewriteLease(ctx context.Context, cs kubernetes.Interface, name string, fresh *coordinationv1.Lease, dry bool) error {
	cur, err := cs.CoordinationV1().Leases(releaseNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	cur.Annotations, cur.Spec = fresh.Annotations, fresh.Spec
	_, err = cs.CoordinationV1().Leases(releaseNS).Update(ctx, cur, metav1.UpdateOptions{DryRun: dryRun(dry)})
	return err
}

func (e *env) attachedOf(node string) []string {
	e.t.Helper()
	l, err := e.c.Client.CoordinationV1().Leases(releaseNS).Get(e.ctx, placement.LeaseName(node), metav1.GetOptions{})
	require.NoError(e.t, err)
	nr, ok := placement.NodeReportFromLease(l)
	require.True(e.t, ok, "Lease %s is not a report of %s", l.Name, node)
	require.NoError(e.t, nr.Err)
	return nr.Report.Attached
}

// TestPodBoundTokenCarriesNodeName checks the fact the report policy rests on, on the pinned
// kube-apiserver (v1.36.3, no extra flags or feature gates: ServiceAccountTokenPodNodeInfo
// is GA and locked on since v1.32): a ServiceAccount token bound to a Pod that has
// spec.nodeName authenticates with user extra authentication.kubernetes.io/node-name = that
// node (and pod-name, pod-uid); a token not bound to a Pod carries no node name.
func TestPodBoundTokenCarriesNodeName(t *testing.T) {
	e := startCluster(t, "node-a")
	e.serviceAccount(releaseNS, agentSA)

	review := func(token string) authenticationv1.UserInfo {
		r, err := e.as(token).AuthenticationV1().SelfSubjectReviews().Create(e.ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		require.NoError(t, err, "SelfSubjectReview")
		return r.Status.UserInfo
	}
	bound := review(e.agentPod("agent-node-a", "node-a"))
	t.Logf("pod-bound token: user %s, extra %v", bound.Username, bound.Extra)
	require.Equal(t, agentUser, bound.Username)
	require.Equal(t, authenticationv1.ExtraValue{"node-a"}, bound.Extra[nodeNameExtra])
	require.Equal(t, authenticationv1.ExtraValue{"agent-node-a"}, bound.Extra["authentication.kubernetes.io/pod-name"])

	plain := review(e.token(releaseNS, agentSA, nil))
	t.Logf("unbound token: user %s, extra %v", plain.Username, plain.Extra)
	require.Equal(t, agentUser, plain.Username)
	require.NotContains(t, plain.Extra, nodeNameExtra)

	// A Pod not scheduled yet: bound, but no node.
	p, err := e.c.Client.CoreV1().Pods(releaseNS).Create(e.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-unscheduled"},
		Spec: corev1.PodSpec{
			ServiceAccountName: agentSA,
			SchedulingGates:    []corev1.PodSchedulingGate{{Name: "petfabric.io/hold"}},
			Containers:         []corev1.Container{{Name: "agent", Image: "registry.example/petfabric:test"}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	unscheduled := review(e.token(releaseNS, agentSA, &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: p.Name, UID: p.UID}))
	t.Logf("token bound to an unscheduled pod: extra %v", unscheduled.Extra)
	require.NotContains(t, unscheduled.Extra, nodeNameExtra)
}

// TestAgentWritesOnlyItsOwnNodeReport: every node agent runs as the same ServiceAccount, so
// with RBAC alone the agent of node-a (or anyone holding an agent token) can rewrite node-b's
// report, e.g. empty its attached list to lift node-b's ReadWriteOnce hold. With the chart's
// policy an agent writes only petfabric-node-<the node its token is bound to>, as that
// node's holder; a token not bound to a Pod on a node writes no report; nobody else writes
// reports; the real agent (pkg/agent) still creates and renews its own.
func TestAgentWritesOnlyItsOwnNodeReport(t *testing.T) {
	e := start(t, "node-a", "node-b")
	e.serviceAccount(releaseNS, agentSA)
	e.grantNamespace(releaseNS, "agent-leases", []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
	}, saSubject(releaseNS, agentSA))
	agentA := e.as(e.agentPod("agent-node-a", "node-a"))
	agentB := e.as(e.agentPod("agent-node-b", "node-b"))
	unbound := e.as(e.token(releaseNS, agentSA, nil))
	nameA, nameB := placement.LeaseName("node-a"), placement.LeaseName("node-b")

	// Without the policy: node-b reports a held volume; node-a's agent empties the list.
	require.NoError(t, createLease(e.ctx, agentB, reportLease("node-b", "k0_team-a_data-db-0"), false))
	require.NoError(t, rewriteLease(e.ctx, agentA, nameB, reportLease("node-b"), false),
		"RBAC must allow the forged report for this test to mean anything")
	require.Empty(t, e.attachedOf("node-b"))
	t.Log("without the policy: node-a's agent emptied node-b's attached list")
	require.NoError(t, rewriteLease(e.ctx, unbound, nameB, reportLease("node-b"), false))
	t.Log("without the policy: an unbound agent token rewrote node-b's report")
	require.NoError(t, rewriteLease(e.ctx, agentB, nameB, reportLease("node-b", "k0_team-a_data-db-0"), false))

	e.install("")
	e.waitEnforced(reportPolicy, func(ctx context.Context) error {
		return rewriteLease(ctx, agentA, nameB, reportLease("node-b"), true)
	})

	t.Run("real agent creates and renews its own report", func(t *testing.T) {
		a, err := agent.New(agent.Options{
			Node: "node-a", Initiator: "iqn.2024-01.io.petfabric:node-a", StateDir: t.TempDir(),
			Backstores: []agent.Backstore{{Server: "datera.example:7717", Portals: []string{"192.0.2.10:3260"}}},
			Leases:     agentA.CoordinationV1().Leases(releaseNS),
			Interval:   300 * time.Millisecond, TTL: 10 * time.Second,
			Probe: func(_ context.Context, portal string, _ iscsi.ProbeOptions) (*iscsi.ProbeResult, error) {
				return &iscsi.ProbeResult{Portal: portal, RTT: 100 * time.Microsecond}, nil
			},
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(e.ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		defer func() { cancel(); require.NoError(t, <-done) }()
		var first *coordinationv1.Lease
		require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			l, err := e.c.Client.CoordinationV1().Leases(releaseNS).Get(ctx, nameA, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			if first == nil {
				first = l
				return false, nil
			}
			return l.ResourceVersion != first.ResourceVersion, nil
		}), "the agent never created and then updated %s", nameA)
	})
	t.Run("node-b's agent updates its own report", func(t *testing.T) {
		require.NoError(t, rewriteLease(e.ctx, agentB, nameB, reportLease("node-b", "k0_team-a_data-db-0"), false))
	})
	t.Run("node-a's agent rewriting node-b's report denied", func(t *testing.T) {
		err := rewriteLease(e.ctx, agentA, nameB, reportLease("node-b"), false)
		requireDenied(t, err, reportPolicy, "node-a", "only its own node's report Lease "+nameA, nameB)
		require.Equal(t, []string{"k0_team-a_data-db-0"}, e.attachedOf("node-b"), "node-b's hold must survive")
	})
	t.Run("node-a's agent creating another node's report denied", func(t *testing.T) {
		err := createLease(e.ctx, agentA, reportLease("node-c"), false)
		requireDenied(t, err, reportPolicy, "only its own node's report Lease "+nameA)
	})
	t.Run("node-a's agent naming another holder denied", func(t *testing.T) {
		l := reportLease("node-a")
		l.Spec.HolderIdentity = ptr.To("node-b")
		err := rewriteLease(e.ctx, agentA, nameA, l, false)
		requireDenied(t, err, reportPolicy, "spec.holderIdentity", "node-a")
	})
	t.Run("node-a's agent deleting node-b's report denied", func(t *testing.T) {
		err := agentA.CoordinationV1().Leases(releaseNS).Delete(e.ctx, nameB, metav1.DeleteOptions{})
		requireDenied(t, err, reportPolicy, "only its own node's report Lease "+nameA)
	})
	t.Run("node-a's agent writing another Lease of the namespace denied", func(t *testing.T) {
		// e.g. the webhook's leader-election Lease
		err := createLease(e.ctx, agentA, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "petfabric-webhook"}, Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("node-a")}}, false)
		requireDenied(t, err, reportPolicy, "only its own node's report Lease "+nameA)
	})
	t.Run("unbound agent token denied", func(t *testing.T) {
		err := rewriteLease(e.ctx, unbound, nameA, reportLease("node-a"), false)
		requireDenied(t, err, reportPolicy, "carries no node name")
	})
	t.Run("agent on a node whose name is too long for a report Lease denied", func(t *testing.T) {
		long := strings.Repeat("n", 62) + "." + strings.Repeat("o", 62) + "." + strings.Repeat("d", 62) + "." + strings.Repeat("e", 62)
		c := e.as(e.agentPod("agent-long", long))
		err := createLease(e.ctx, c, reportLease(long), false)
		requireDenied(t, err, reportPolicy, "too long")
	})
	t.Run("cluster admin writing a report denied", func(t *testing.T) {
		err := rewriteLease(e.ctx, e.c.Client, nameB, reportLease("node-b"), false)
		requireDenied(t, err, reportPolicy, "only the petfabric node agent ("+agentUser+")")
	})
	t.Run("cluster admin deleting a report allowed", func(t *testing.T) {
		// e.g. the report of a node that was removed from the cluster
		require.NoError(t, e.c.Client.CoordinationV1().Leases(releaseNS).Delete(e.ctx, nameB, metav1.DeleteOptions{}))
	})
	t.Run("node-a's agent deleting its own report allowed", func(t *testing.T) {
		err := agentA.CoordinationV1().Leases(releaseNS).Delete(e.ctx, nameA, metav1.DeleteOptions{})
		require.True(t, err == nil || apierrors.IsNotFound(err), "%v", err)
	})
	t.Run("report-named Leases elsewhere are not petfabric's", func(t *testing.T) {
		e.namespace("elsewhere")
		_, err := e.c.Client.CoordinationV1().Leases("elsewhere").Create(e.ctx, reportLease("node-b"), metav1.CreateOptions{})
		require.NoError(t, err)
	})
}
