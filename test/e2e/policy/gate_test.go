package policy

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// gatePolicy limits the webhook's identity on Pod updates to removing petfabric's gate.
const gatePolicy = releaseName + "-webhook-pod-updates"

// TestWebhookMayOnlyRemoveItsSchedulingGate: the webhook's token (RBAC: patch pods, as the
// chart grants its reconcile loop) removes the petfabric.io/claims-bound gate from a pod with
// the very patch the loop sends (mutate.RemoveGatePatch), and is denied by the policy when it
// relabels or re-annotates the pod, removes another controller's gate, or changes an image;
// the same changes by a cluster admin pass (the policy matches the webhook only).
func TestWebhookMayOnlyRemoveItsSchedulingGate(t *testing.T) {
	e := start(t, "node-a")
	const ns = "tenant"
	e.namespace(ns)
	webhook := e.asSA(releaseNS, webhookSA)
	e.grantCluster("petfabric-webhook-pods", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "patch", "update"}},
	}, saSubject(releaseNS, webhookSA))
	newPod := func(name string) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "db"}},
			Spec: corev1.PodSpec{
				Containers:      []corev1.Container{{Name: "c", Image: "nginx"}},
				SchedulingGates: []corev1.PodSchedulingGate{{Name: "example.com/quota"}, {Name: mutate.SchedulingGate}},
			},
		}
		got, err := e.c.Client.CoreV1().Pods(ns).Create(e.ctx, p, metav1.CreateOptions{})
		require.NoError(t, err)
		return got
	}
	patch := func(ctx context.Context, c interface {
		Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (*corev1.Pod, error)
	}, name string, pt types.PatchType, body string, dry bool) error {
		_, err := c.Patch(ctx, name, pt, []byte(body), metav1.PatchOptions{DryRun: dryRun(dry)})
		return err
	}
	pods := webhook.CoreV1().Pods(ns)
	relabel := `{"metadata":{"labels":{"app":"stolen"}}}`

	pod := newPod("pet-0")
	// Without the policy, RBAC lets the webhook relabel: the policy is what stops it.
	require.NoError(t, patch(e.ctx, pods, pod.Name, types.MergePatchType, relabel, true), "RBAC must allow it for this test to mean anything")

	e.install("")
	e.waitEnforced(gatePolicy, func(ctx context.Context) error {
		return patch(ctx, pods, pod.Name, types.MergePatchType, relabel, true)
	})

	for _, tc := range []struct {
		name, body string
		pt         types.PatchType
		want       string
	}{
		{"relabel", relabel, types.MergePatchType, "metadata.labels"},
		{"annotate", `{"metadata":{"annotations":{"x":"y"}}}`, types.MergePatchType, "metadata.annotations"},
		{"remove another controller's gate", `[{"op":"remove","path":"/spec/schedulingGates/0"}]`, types.JSONPatchType, "spec.schedulingGates"},
		{"remove every gate", `[{"op":"remove","path":"/spec/schedulingGates"}]`, types.JSONPatchType, "spec.schedulingGates"},
		{"change an image", `[{"op":"replace","path":"/spec/containers/0/image","value":"evil"}]`, types.JSONPatchType, "spec.containers"},
		// While a pod is gated the apiserver lets its nodeSelector and affinity be added to or
		// narrowed: the webhook's identity must not steer a pet onto a node of its choosing.
		{"steer it to a node (nodeSelector)", `{"spec":{"nodeSelector":{"kubernetes.io/hostname":"node-b"}}}`, types.MergePatchType, "spec.nodeSelector"},
		{"steer it to a node (affinity)", `{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"kubernetes.io/hostname","operator":"In","values":["node-b"]}]}]}}}}}`, types.MergePatchType, "spec.affinity"},
	} {
		t.Run("webhook denied: "+tc.name, func(t *testing.T) {
			err := patch(e.ctx, pods, pod.Name, tc.pt, tc.body, false)
			requireDenied(t, err, gatePolicy, tc.want)
		})
	}
	t.Run("cluster admin may relabel", func(t *testing.T) {
		require.NoError(t, patch(e.ctx, e.c.Client.CoreV1().Pods(ns), pod.Name, types.MergePatchType, relabel, true))
	})
	t.Run("webhook removes its own gate with the loop's patch", func(t *testing.T) {
		cur, err := e.c.Client.CoreV1().Pods(ns).Get(e.ctx, pod.Name, metav1.GetOptions{})
		require.NoError(t, err)
		body, ok, err := mutate.RemoveGatePatch(cur)
		require.NoError(t, err)
		require.True(t, ok)
		got, err := pods.Patch(e.ctx, pod.Name, types.JSONPatchType, body, metav1.PatchOptions{})
		require.NoError(t, err)
		require.Equal(t, []corev1.PodSchedulingGate{{Name: "example.com/quota"}}, got.Spec.SchedulingGates)
		require.Equal(t, "db", got.Labels["app"])
	})
}
