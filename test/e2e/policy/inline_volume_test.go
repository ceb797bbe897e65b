package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// inlinePod is a tenant's Pod with inline FlexVolumes of the given drivers (volume v0, v1, …).
// With driver datera/iscsi it is the attack: another tenant's volume ID, made-up credentials.
func inlinePod(name string, drivers ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
		},
	}
	for i, d := range drivers {
		name := "v" + string(rune('0'+i))
		p.Spec.Volumes = append(p.Spec.Volumes, inlineVolume(name, d))
		p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: name, MountPath: "/data/" + name})
	}
	return p
}

func inlineVolume(name, driver string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{FlexVolume: &corev1.FlexVolumeSource{
		Driver: driver,
		FSType: "ext4",
		Options: map[string]string{
			"volumeID":        "k0123456789abcdef_team-a_data-db-0",
			"backstoreServer": "datera.example:7717",
			"username":        "made-up",
			"password":        "made-up",
		},
	}}}
}

// TestTenantPodWithInlineDateraVolumeIsDenied: a tenant with ordinary Pod rights creates a
// Pod with an inline datera/iscsi flexVolume naming another tenant's volume. Without the
// chart's policy the apiserver stores it (kubelet would then run the driver with whatever the
// Pod says); with it the Pod is denied with a message naming the volume. Pods with other
// FlexVolume drivers are not affected, a workload's Pod template is stopped where its Pod is
// created, and Pods that existed before the policy can still be updated and deleted.
func TestTenantPodWithInlineDateraVolumeIsDenied(t *testing.T) {
	e := start(t, "node-a")
	const tenantNS = "team-b"
	tenant := e.asSA(tenantNS, "tenant")
	e.grantNamespace(tenantNS, "tenant-workloads", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
	}, saSubject(tenantNS, "tenant"))
	pods := tenant.CoreV1().Pods(tenantNS)
	create := func(ctx context.Context, p *corev1.Pod, dry bool) error {
		_, err := pods.Create(ctx, p, metav1.CreateOptions{DryRun: dryRun(dry)})
		return err
	}

	// Without the policy, RBAC lets the tenant create it: the policy is what stops it.
	require.NoError(t, create(e.ctx, inlinePod("before-policy", mutate.Driver), false), "RBAC must allow the Pod for this test to mean anything")

	e.install("")
	e.waitEnforced(podPolicy, func(ctx context.Context) error { return create(ctx, inlinePod("probe", mutate.Driver), true) })

	t.Run("inline datera volume denied", func(t *testing.T) {
		err := create(e.ctx, inlinePod("steal", mutate.Driver), false)
		requireDenied(t, err, podPolicy, "volume(s) v0:", "inline flexVolume with driver datera/iscsi")
	})
	t.Run("one datera volume among others denied, naming it", func(t *testing.T) {
		err := create(e.ctx, inlinePod("mixed", "example.com/nfs", mutate.Driver), false)
		requireDenied(t, err, podPolicy, "volume(s) v1:")
		require.NotContains(t, err.Error(), "v0")
	})
	t.Run("other flex driver allowed", func(t *testing.T) {
		require.NoError(t, create(e.ctx, inlinePod("other-driver", "example.com/nfs"), false))
	})
	t.Run("pod without volumes allowed", func(t *testing.T) {
		require.NoError(t, create(e.ctx, inlinePod("plain"), false))
	})
	t.Run("cluster admin denied too", func(t *testing.T) {
		p := inlinePod("admin", mutate.Driver)
		_, err := e.c.Client.CoreV1().Pods(tenantNS).Create(e.ctx, p, metav1.CreateOptions{})
		requireDenied(t, err, podPolicy, "inline flexVolume with driver datera/iscsi")
	})
	t.Run("pod template stopped at its pod", func(t *testing.T) {
		tmpl := inlinePod("", mutate.Driver)
		tmpl.Labels = map[string]string{"app": "thief"}
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "thief"},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](1),
				Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec},
			},
		}
		_, err := tenant.AppsV1().Deployments(tenantNS).Create(e.ctx, d, metav1.CreateOptions{})
		require.NoError(t, err, "the Deployment itself is not what mounts anything")
		// The ReplicaSet controller's Pod create is denied; the ReplicaSet says why.
		var msg string
		err = wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			rss, err := e.c.Client.AppsV1().ReplicaSets(tenantNS).List(ctx, metav1.ListOptions{LabelSelector: "app=thief"})
			if err != nil || len(rss.Items) == 0 {
				return false, nil
			}
			for _, c := range rss.Items[0].Status.Conditions {
				if c.Type == appsv1.ReplicaSetReplicaFailure && strings.Contains(c.Message, "ValidatingAdmissionPolicy '"+podPolicy+"'") {
					msg = c.Message
					return true, nil
				}
			}
			return false, nil
		})
		require.NoError(t, err, "the ReplicaSet never reported the denied Pod create")
		t.Logf("ReplicaSet condition: %s", msg)
		list, err := e.c.Client.CoreV1().Pods(tenantNS).List(e.ctx, metav1.ListOptions{LabelSelector: "app=thief"})
		require.NoError(t, err)
		require.Empty(t, list.Items, "no Pod of the Deployment may exist")
	})
	t.Run("existing pod can still be updated and deleted", func(t *testing.T) {
		// A Pod admitted before the policy: labels, finalizers and deletion still work (the
		// policy matches only CREATE, as a Pod's volumes cannot change after creation) …
		require.NoError(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
			p, err := pods.Get(e.ctx, "before-policy", metav1.GetOptions{})
			if err != nil {
				return err
			}
			p.Labels = map[string]string{"quarantine": "true"}
			_, err = pods.Update(e.ctx, p, metav1.UpdateOptions{})
			return err
		}))
		// … and no update can add a datera volume: the apiserver refuses any change of
		// spec.volumes before admission runs.
		p, err := pods.Get(e.ctx, "before-policy", metav1.GetOptions{})
		require.NoError(t, err)
		p.Spec.Volumes = append(p.Spec.Volumes, inlineVolume("added", mutate.Driver))
		_, err = pods.Update(e.ctx, p, metav1.UpdateOptions{})
		require.Error(t, err)
		require.Contains(t, err.Error(), "pod updates may not change fields other than")
		require.NoError(t, pods.Delete(e.ctx, "before-policy", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	})
}
