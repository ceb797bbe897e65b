package mutate

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

func TestCheckOrdinals(t *testing.T) {
	sts := func(replicas, start int32) *appsv1.StatefulSet {
		s := &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(replicas)}}
		if start != 0 {
			s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: start}
		}
		return s
	}
	cases := []struct {
		name      string
		cfg       Config
		sts       *appsv1.StatefulSet
		wantField string
		wantMsg   string
	}{
		{name: "default ceiling: 1000 replicas fit", sts: sts(1000, 0)},
		{name: "default ceiling: 1001 do not", sts: sts(1001, 0), wantField: "spec.replicas", wantMsg: "at most 1000 with spec.ordinals.start 0"},
		{name: "int32 max (the attack)", sts: sts(2147483647, 0), wantField: "spec.replicas", wantMsg: "ordinals 0 to 999 (the webhook's --max-ordinals)"},
		{name: "start shifts the range", sts: sts(10, 995), wantField: "spec.replicas", wantMsg: "at most 5 with spec.ordinals.start 995"},
		{name: "start past the ceiling", sts: sts(1, 1000), wantField: "spec.ordinals.start", wantMsg: "below 1000"},
		{name: "zero replicas anywhere", sts: sts(0, 5000)},
		{name: "configured ceiling", cfg: Config{MaxOrdinals: 3}, sts: sts(4, 0), wantField: "spec.replicas", wantMsg: "at most 3"},
		{name: "nil replicas is 1", sts: &appsv1.StatefulSet{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckOrdinals(tc.cfg, tc.sts)
			if tc.wantField == "" {
				require.NoError(t, err)
				return
			}
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Equal(t, tc.wantField, ve.Field)
			assert.Contains(t, err.Error(), tc.wantMsg)
		})
	}
	assert.Equal(t, DefaultMaxOrdinals, Config{}.OrdinalCeiling())
	assert.Equal(t, DefaultMaxOrdinals, Config{MaxOrdinals: -1}.OrdinalCeiling())
	assert.Equal(t, 7, Config{MaxOrdinals: 7}.OrdinalCeiling())
}

func TestValidateStatefulSet(t *testing.T) {
	base := func() *appsv1.StatefulSet {
		labels := map[string]string{"app": "web"}
		return &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](2), ServiceName: "web",
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}},
		}}
	}
	cases := []struct {
		name      string
		mod       func(s *appsv1.StatefulSet)
		update    bool
		wantField string
	}{
		{name: "valid create", mod: func(*appsv1.StatefulSet) {}},
		{name: "negative replicas", mod: func(s *appsv1.StatefulSet) { s.Spec.Replicas = ptr.To[int32](-1) }, wantField: "spec.replicas"},
		{name: "negative start", mod: func(s *appsv1.StatefulSet) { s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: -2} }, wantField: "spec.ordinals.start"},
		{name: "no selector", mod: func(s *appsv1.StatefulSet) { s.Spec.Selector = nil }, wantField: "spec.selector"},
		{name: "empty selector", mod: func(s *appsv1.StatefulSet) { s.Spec.Selector = &metav1.LabelSelector{} }, wantField: "spec.selector"},
		{name: "bad selector", mod: func(s *appsv1.StatefulSet) {
			s.Spec.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Sometimes"}}}
		}, wantField: "spec.selector"},
		{name: "labels not matching", mod: func(s *appsv1.StatefulSet) { s.Spec.Template.Labels = map[string]string{"app": "other"} }, wantField: "spec.template.metadata.labels"},
		{name: "update: scale and new image", update: true, mod: func(s *appsv1.StatefulSet) {
			s.Spec.Replicas = ptr.To[int32](9)
			s.Spec.Template.Spec.Containers = []corev1.Container{{Name: "c", Image: "nginx:2"}}
			s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 3}
			s.Spec.MinReadySeconds = 5
		}},
		{name: "update: serviceName is immutable", update: true, mod: func(s *appsv1.StatefulSet) { s.Spec.ServiceName = "other" }, wantField: "spec"},
		{name: "update: templates are immutable", update: true, mod: func(s *appsv1.StatefulSet) {
			s.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "more"}}}
		}, wantField: "spec"},
		{name: "update: selector is immutable", update: true, mod: func(s *appsv1.StatefulSet) {
			s.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web", "x": "y"}}
			s.Spec.Template.Labels = map[string]string{"app": "web", "x": "y"}
		}, wantField: "spec"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old := base()
			s := base()
			tc.mod(s)
			var err error
			if tc.update {
				err = ValidateStatefulSet(s, old)
			} else {
				err = ValidateStatefulSet(s, nil)
			}
			if tc.wantField == "" {
				require.NoError(t, err)
				return
			}
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Equal(t, tc.wantField, ve.Field)
		})
	}
}

// TestAccessModeOption: exactly [ReadOnlyMany] is ReadOnlyMany; every other allowed
// combination is ReadWriteOnce; ReadWriteMany is refused (TestInvalidOptions).
func TestAccessModeOption(t *testing.T) {
	for _, tc := range []struct {
		modes []corev1.PersistentVolumeAccessMode
		want  string
	}{
		{[]corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany}, pvoptions.AccessReadOnlyMany},
		{[]corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, pvoptions.AccessReadWriteOnce},
		{[]corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}, pvoptions.AccessReadWriteOnce},
		{[]corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce, corev1.ReadOnlyMany}, pvoptions.AccessReadWriteOnce},
		{nil, pvoptions.AccessReadWriteOnce},
	} {
		sts, _ := loadSTS(t, "test-petset.yaml")
		sts.Spec.VolumeClaimTemplates[0].Spec.AccessModes = tc.modes
		plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: loadClasses(t)})
		require.NoError(t, err)
		assert.Equal(t, tc.want, plan.Templates[0].AccessMode, "%v", tc.modes)
		pv, err := plan.Ordinal(plan.Templates[0], 0).PersistentVolume(testCfg)
		require.NoError(t, err)
		assert.Equal(t, tc.want, pv.Spec.FlexVolume.Options[pvoptions.OptAccessMode])
	}
}

// TestPersistentVolumeNeedsOwner: no PV without a cluster ID or the namespace UID.
func TestPersistentVolumeNeedsOwner(t *testing.T) {
	sts, _ := loadSTS(t, "test-petset.yaml")
	plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: loadClasses(t)})
	require.NoError(t, err)
	cv := plan.Ordinal(plan.Templates[0], 0)
	pv, err := cv.PersistentVolume(testCfg)
	require.NoError(t, err)
	owner, ok := pvoptions.OwnerFromOptions(pv.Spec.FlexVolume.Options)
	require.True(t, ok)
	assert.Equal(t, pvoptions.Owner{ClusterID: "pf", Namespace: sts.Namespace, Claim: cv.Claim, NamespaceUID: testNSUID}, owner)

	noCluster := testCfg
	noCluster.ClusterID = ""
	_, err = cv.PersistentVolume(noCluster)
	assert.ErrorContains(t, err, "no cluster id")
	cv.NamespaceUID = ""
	_, err = cv.PersistentVolume(testCfg)
	assert.ErrorContains(t, err, "UID of namespace")
}

func TestCheckPV(t *testing.T) {
	sts, _ := loadSTS(t, "test-petset.yaml")
	plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: loadClasses(t)})
	require.NoError(t, err)
	cv := plan.Ordinal(plan.Templates[0], 0)
	good, err := cv.PersistentVolume(testCfg)
	require.NoError(t, err)
	cases := []struct {
		name string
		mod  func(pv *corev1.PersistentVolume)
		want []string
	}{
		{name: "the PV the webhook makes", mod: func(*corev1.PersistentVolume) {}},
		{name: "larger is fine", mod: func(pv *corev1.PersistentVolume) {
			pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("1Ti")
		}},
		{name: "version 1 PV: no owner, volume ID without cluster", mod: func(pv *corev1.PersistentVolume) {
			for _, k := range []string{"clusterID", "claimNamespace", "claimName", "namespaceUID", "accessMode"} {
				delete(pv.Spec.FlexVolume.Options, k)
			}
			pv.Spec.FlexVolume.Options["volumeID"] = strings.TrimPrefix(pv.Spec.FlexVolume.Options["volumeID"], "pf_")
		}},
		{name: "other class", mod: func(pv *corev1.PersistentVolume) { pv.Spec.StorageClassName = "cheap" }, want: []string{MismatchStorageClass}},
		{name: "smaller", mod: func(pv *corev1.PersistentVolume) {
			pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("1Gi")
		}, want: []string{MismatchCapacity}},
		{name: "no capacity", mod: func(pv *corev1.PersistentVolume) { pv.Spec.Capacity = nil }, want: []string{MismatchCapacity}},
		{name: "read-only many only", mod: func(pv *corev1.PersistentVolume) {
			pv.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany}
		}, want: []string{MismatchAccessModes}},
		{name: "another driver", mod: func(pv *corev1.PersistentVolume) { pv.Spec.FlexVolume.Driver = "other/iscsi" }, want: []string{MismatchDriver}},
		{name: "not a flex volume", mod: func(pv *corev1.PersistentVolume) {
			pv.Spec.FlexVolume = nil
			pv.Spec.CSI = &corev1.CSIPersistentVolumeSource{Driver: "x"}
		}, want: []string{MismatchDriver}},
		{name: "another tenant's volume", mod: func(pv *corev1.PersistentVolume) { pv.Spec.FlexVolume.Options["volumeID"] = "pf_other_data-db-0" }, want: []string{MismatchVolumeID}},
		{name: "re-created namespace", mod: func(pv *corev1.PersistentVolume) { pv.Spec.FlexVolume.Options["namespaceUID"] = "old-uid" }, want: []string{MismatchOwner}},
		{name: "another cluster", mod: func(pv *corev1.PersistentVolume) { pv.Spec.FlexVolume.Options["clusterID"] = "k0000" }, want: []string{MismatchOwner}},
		{name: "several", mod: func(pv *corev1.PersistentVolume) {
			pv.Spec.StorageClassName = "cheap"
			pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("1Gi")
		}, want: []string{MismatchStorageClass, MismatchCapacity}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pv := good.DeepCopy()
			tc.mod(pv)
			var got []string
			for _, m := range CheckPV(testCfg, cv, pv) {
				got = append(got, m.Reason)
				assert.Contains(t, m.Detail, pv.Name)
			}
			assert.Equal(t, tc.want, got)
		})
	}
}
