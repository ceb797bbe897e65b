package e2e

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestWebhookChartOutageUnderFail: with the chart's webhook configuration under failurePolicy
// Fail and no webhook answering, the real apiserver still admits everything the webhook could
// not affect (its matchConditions and selectors decide, evaluated by the apiserver): claims of
// other storage, StatefulSets without claim templates, anything in the release namespace or
// an opted-out namespace, and opted-out objects; and pods, whose hook (the scheduling gate)
// is an optimisation under failurePolicy Ignore. What the webhook must see is refused, so it
// is never admitted unpinned: a claim carrying petfabric's pinning annotations (the claims the
// webhook makes PVs for), a claim naming a Datera class, a StatefulSet with claim templates.
func TestWebhookChartOutageUnderFail(t *testing.T) {
	cluster.RequireBinaries(t)
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := c.Client

	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: credsNamespace}},
		{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "ops", Labels: map[string]string{webhookIgnoreLabel: webhookIgnoreValue}}},
	} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	// A port nothing listens on: every call fails as in an outage.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "https://" + l.Addr().String()
	require.NoError(t, l.Close())
	ca, err := testpki.NewCA("petfabric-outage-test-ca")
	require.NoError(t, err)
	_, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx,
		chartWebhookConfig(t, dead, ca.CertPEM, admissionregistrationv1.Fail), metav1.CreateOptions{})
	require.NoError(t, err)

	claim := func(ns, name, class string, ann map[string]string) func(context.Context, []string) error {
		return func(ctx context.Context, dry []string) error {
			pvc := &corev1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					StorageClassName: ptr.To(class),
					Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}
			_, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{DryRun: dry})
			return err
		}
	}
	sts := func(ns, name string, templates bool, lbl map[string]string) func(context.Context, []string) error {
		return func(ctx context.Context, dry []string) error {
			s := statefulSet(ns, name, 1, ptr.To("datera-gold"))
			s.Labels = lbl
			if !templates {
				s.Spec.VolumeClaimTemplates = nil
				s.Spec.Template.Spec.Containers[0].VolumeMounts = nil
			}
			_, err := cs.AppsV1().StatefulSets(ns).Create(ctx, s, metav1.CreateOptions{DryRun: dry})
			return err
		}
	}
	pod := func(ns, name, claim string) func(context.Context, []string) error {
		return func(ctx context.Context, dry []string) error {
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
			}
			if claim != "" {
				p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}
			}
			_, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{DryRun: dry})
			return err
		}
	}
	pinned := map[string]string{mutate.AnnStatefulSet: "db", mutate.AnnClaimTemplate: "data"}
	refused := func(err error) bool {
		return err != nil && strings.Contains(err.Error(), "failed calling webhook")
	}

	// The apiserver loads the configuration asynchronously: wait until a call is attempted.
	var last error
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		last = claim("shop", "probe", "datera-gold", nil)(ctx, []string{metav1.DryRunAll})
		return refused(last), nil
	})
	require.NoError(t, err, "the apiserver never called the (dead) webhook; last: %v", last)

	for _, tc := range []struct {
		name     string
		create   func(context.Context, []string) error
		admitted bool
	}{
		{"claim of other storage", claim("shop", "local", "local-path", nil), true},
		{"classless claim", claim("shop", "plain", "", nil), true},
		{"claim of a Datera class", claim("shop", "gold", "datera-gold", nil), false},
		{"claim pinned by petfabric (other class name)", claim("shop", "data-db-0", "renamed", pinned), false},
		{"claim with only one of the pinning annotations", claim("shop", "half", "local-path", map[string]string{mutate.AnnStatefulSet: "db"}), true},
		{"Datera claim in the release namespace", claim(credsNamespace, "gold", "datera-gold", nil), true},
		{"Datera claim in an opted-out namespace", claim("ops", "gold", "datera-gold", nil), true},
		{"StatefulSet without claim templates", sts("shop", "stateless", false, nil), true},
		{"StatefulSet with claim templates", sts("shop", "db", true, nil), false},
		{"pod without claims", pod("shop", "plain", ""), true},
		{"pod mounting a claim (the scheduling gate's hook never blocks)", pod("shop", "db-0", "data-db-0"), true},
		{"opted-out StatefulSet with claim templates", sts("shop", "legacy", true, map[string]string{webhookIgnoreLabel: webhookIgnoreValue}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.create(ctx, nil)
			if tc.admitted {
				require.NoError(t, err, "admitted although the webhook is down")
			} else {
				require.Truef(t, refused(err), "refused by the failing webhook, got: %v", err)
			}
		})
	}
}
