package mutate

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// TestPersistentVolumeGolden compares the PV of one ordinal with a hand-written PV of the
// PV contract (pkg/pvoptions and ARCHITECTURE.md), field by field (as JSON, so every field counts).
func TestPersistentVolumeGolden(t *testing.T) {
	classes := loadClasses(t)
	cases := []struct {
		fixture  string
		nsLabels map[string]string
		template string
		ordinal  int
		golden   string
	}{
		{"test-petset.yaml", nil, "pv-claim", 1, "pv-test-petset-1.yaml"},
		{"cockroachdb.yaml", optedIn, "datadir", 4, "pv-cockroachdb-4.yaml"},
		{"mixed.yaml", nil, "cache", 2, "pv-shop-cache-2.yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.golden, func(t *testing.T) {
			sts, _ := loadSTS(t, tc.fixture)
			plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, NamespaceLabels: tc.nsLabels, Classes: classes})
			require.NoError(t, err)
			tp := templateNamed(t, plan, tc.template)
			pv, err := plan.Ordinal(tp, tc.ordinal).PersistentVolume(testCfg)
			require.NoError(t, err)
			want := loadPV(t, tc.golden)
			want.APIVersion, want.Kind = "", "" // the PVStore sets them on the wire
			assert.JSONEq(t, string(mustJSON(t, want)), string(mustJSON(t, pv)))
		})
	}
}

func templateNamed(t *testing.T, p Plan, name string) TemplatePlan {
	t.Helper()
	for _, tp := range p.Templates {
		if tp.Name == name {
			return tp
		}
	}
	t.Fatalf("no planned template %s", name)
	return TemplatePlan{}
}

// TestPersistentVolumeContract checks every clause of the contract for every ordinal of
// every Datera-bound template of every fixture.
func TestPersistentVolumeContract(t *testing.T) {
	classes := loadClasses(t)
	for _, tc := range decideCases {
		if len(tc.want) == 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			sts, _ := loadCase(t, tc.fixture, tc.stsLabel)
			plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, NamespaceLabels: tc.nsLabels, Classes: classes})
			require.NoError(t, err)
			for i, tp := range plan.Templates {
				w := tc.want[i]
				for n := range int(*sts.Spec.Replicas) {
					claim := fmt.Sprintf("%s-%s-%d", tp.Name, sts.Name, n)
					cv := plan.Ordinal(tp, n)
					assert.Equal(t, claim, cv.Claim)
					pv, err := cv.PersistentVolume(testCfg)
					require.NoError(t, err)
					checkContractPV(t, pv, sts.Namespace, claim, w.class, w.sizeGiB, w.options)
					assert.Equal(t, map[string]string{
						LabelManagedBy: ManagedByValue, LabelNamespace: sts.Namespace,
						LabelStatefulSet: sts.Name, LabelClaimTemplate: tp.Name, LabelOrdinal: strconv.Itoa(n),
					}, pv.Labels)
					assert.Equal(t, map[string]string{
						AnnClaim: sts.Namespace + "/" + claim, AnnStatefulSet: sts.Name, AnnClaimTemplate: tp.Name,
					}, pv.Annotations)
					assert.Equal(t, classes[w.class].ReclaimPolicy, pv.Spec.PersistentVolumeReclaimPolicy)
					assert.Equal(t, classes[w.class].MountOptions, pv.Spec.MountOptions)
				}
			}
		})
	}
}

// checkContractPV asserts the contract clauses common to both paths.
func checkContractPV(t *testing.T, pv *corev1.PersistentVolume, namespace, claim, class string, sizeGiB int64, options map[string]string) {
	t.Helper()
	assert.Equal(t, "datera-"+namespace+"."+claim, pv.Name)
	assert.Empty(t, validation.IsDNS1123Subdomain(pv.Name))
	for k, v := range pv.Labels {
		assert.Empty(t, validation.IsQualifiedName(k), k)
		assert.Empty(t, validation.IsValidLabelValue(v), "label %s=%s", k, v)
	}
	ref := pv.Spec.ClaimRef
	require.NotNil(t, ref)
	assert.Equal(t, namespace, ref.Namespace)
	assert.Equal(t, claim, ref.Name)
	assert.Empty(t, ref.UID, "pre-bound without UID")
	assert.Empty(t, ref.ResourceVersion)
	assert.Equal(t, class, pv.Spec.StorageClassName)
	want := resource.MustParse(strconv.FormatInt(sizeGiB, 10) + "Gi")
	assert.Equal(t, 0, want.Cmp(pv.Spec.Capacity[corev1.ResourceStorage]), "capacity %s, want %s", ptr.To(pv.Spec.Capacity[corev1.ResourceStorage]), want.String())
	assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, pv.Spec.AccessModes)
	assert.Equal(t, corev1.PersistentVolumeFilesystem, *pv.Spec.VolumeMode)

	fv := pv.Spec.FlexVolume
	require.NotNil(t, fv)
	assert.Equal(t, "datera/iscsi", fv.Driver)
	assert.Equal(t, options[pvoptions.OptFSType], fv.FSType)
	assert.Equal(t, &corev1.SecretReference{Name: options[OptSecretName], Namespace: options[OptSecretNamespace]}, fv.SecretRef)
	assert.False(t, fv.ReadOnly)
	assert.True(t, pvoptions.ValidName(fv.Options["volumeID"]), fv.Options["volumeID"])
	assert.Equal(t, "pf_"+namespace+"_"+claim, fv.Options["volumeID"])
	assert.Equal(t, strconv.FormatInt(sizeGiB, 10), fv.Options["size"])
	wantOpts := map[string]string{"volumeID": fv.Options["volumeID"], "size": strconv.FormatInt(sizeGiB, 10),
		"accessMode": "ReadWriteOnce", "clusterID": "pf", "claimNamespace": namespace, "claimName": claim, "namespaceUID": testNSUID}
	for _, k := range []string{pvoptions.OptReplica, pvoptions.OptBackstoreServer, pvoptions.OptTemplate, pvoptions.OptPlacementMode, pvoptions.OptMaxIOPS, pvoptions.OptMaxBW, pvoptions.OptIPPool, pvoptions.OptTenant} {
		if v := options[k]; v != "" && v != "0" {
			wantOpts[k] = v
		}
	}
	assert.Equal(t, wantOpts, fv.Options, "exactly the contract's options, all strings")
}

// TestRecordedOptionsFrozen: the options recorded on the template at CREATE win over a
// webhook default changed since, so late ordinals get the same PV as early ones — but they
// are still capped by what the admin grants now: a recorded replica count above a lowered
// grant is refused, naming the annotation and the grant.
func TestRecordedOptionsFrozen(t *testing.T) {
	classes := loadClasses(t)
	sts, raw := loadSTS(t, "cockroachdb.yaml")
	plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, NamespaceLabels: optedIn, Classes: classes})
	require.NoError(t, err)
	patch, err := plan.Patch(raw, sts)
	require.NoError(t, err)
	stored := stsFromJSON(t, applyPatch(t, raw, patch))

	later := testCfg
	later.Defaults = withDefaults(map[string]string{pvoptions.OptFSType: "ext4"})
	again, err := Decide(later, Input{NamespaceUID: testNSUID, StatefulSet: stored, NamespaceLabels: optedIn, Classes: classes, PinnedOnly: true})
	require.NoError(t, err)
	cv := again.Ordinal(again.Templates[0], 7)
	assert.Equal(t, 3, cv.Options.Replica)
	assert.Equal(t, "xfs", cv.Options.FSType)
	assert.Equal(t, "cockroachdb", cv.StatefulSet)

	lowered := map[string]Class{}
	for n, c := range classes {
		params := map[string]string{}
		for k, v := range c.Parameters {
			params[k] = v
		}
		params[pvoptions.OptReplica] = "1"
		c.Parameters = params
		lowered[n] = c
	}
	_, err = Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: stored, NamespaceLabels: optedIn, Classes: lowered, PinnedOnly: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "annotations[petfabric.io/replica]")
	assert.Contains(t, err.Error(), "at most 1, the replica count storageclass datera.parameters[replica] grants")
}

// TestPersistentVolumeLongNames: a claim name as long as Kubernetes allows (PVCs made by hand
// may have 253-character names) still maps to a valid, deterministic PV name, label values
// and Datera volume ID.
func TestPersistentVolumeLongNames(t *testing.T) {
	classes := loadClasses(t)
	tpl := corev1.PersistentVolumeClaim{}
	tpl.Spec.StorageClassName = ptr.To("datera")
	tpl.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}

	// The longest names a StatefulSet path can produce (DNS-label namespace, StatefulSet and
	// template names; a 10-digit ordinal) fit without truncation of the PV name.
	sts := &appsv1.StatefulSet{}
	sts.Name, sts.Namespace = strings.Repeat("s", 63), strings.Repeat("n", 63)
	sts.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{*tpl.DeepCopy()}
	sts.Spec.VolumeClaimTemplates[0].Name = strings.Repeat("t", 63)
	plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: classes})
	require.NoError(t, err)
	cv := plan.Ordinal(plan.Templates[0], 2147483647)
	pv, err := cv.PersistentVolume(testCfg)
	require.NoError(t, err)
	assert.Equal(t, "datera-"+sts.Namespace+"."+cv.Claim, pv.Name)
	assert.Empty(t, validation.IsDNS1123Subdomain(pv.Name))
	for k, v := range pv.Labels {
		assert.Empty(t, validation.IsValidLabelValue(v), "label %s", k)
	}
	id := pv.Spec.FlexVolume.Options["volumeID"]
	assert.Len(t, id, 64)
	assert.True(t, pvoptions.ValidName(id))
	again, err := cv.PersistentVolume(testCfg)
	require.NoError(t, err)
	assert.Equal(t, pv, again, "deterministic")
}

func TestSameClaim(t *testing.T) {
	pv := &corev1.PersistentVolume{}
	assert.False(t, SameClaim(pv, "a", "b"), "not pre-bound")
	pv.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "a", Name: "b"}
	assert.True(t, SameClaim(pv, "a", "b"))
	assert.False(t, SameClaim(pv, "a", "c"))
	assert.False(t, SameClaim(pv, "x", "b"))
}
