package mutate

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// wantTemplate is the expected decision for one Datera-bound claim template.
type wantTemplate struct {
	index   int
	name    string
	class   string
	sizeGiB int64
	options map[string]string // every resolved option (Options.Raw)
}

// defaults are the options testCfg and a class without them resolve to.
func withDefaults(m map[string]string) map[string]string {
	out := map[string]string{
		pvoptions.OptBackstoreServer: "datera-mgmt.example.com:7718",
		OptSecretName:                "datera-credentials",
		OptSecretNamespace:           "petfabric-system",
	}
	for k, v := range m {
		out[k] = v
	}
	return out
}

var (
	gold   = withDefaults(map[string]string{pvoptions.OptReplica: "3", pvoptions.OptFSType: "xfs", pvoptions.OptPlacementMode: "hybrid", pvoptions.OptMaxIOPS: "1000", pvoptions.OptBackstoreServer: "tlx170.tlx.daterainc.com:7717"})
	silver = withDefaults(map[string]string{pvoptions.OptReplica: "2", pvoptions.OptFSType: "ext4", pvoptions.OptTemplate: "silver_tpl", pvoptions.OptMaxBW: "51200", pvoptions.OptIPPool: "pool_b", pvoptions.OptTenant: "/root/shop"})
	plain  = withDefaults(map[string]string{pvoptions.OptReplica: "3", pvoptions.OptFSType: "xfs"})
)

// decideCases are the fixtures of issue 4: the 2016 blogs' manifests translated to apps/v1,
// and a StatefulSet mixing Datera and non-Datera templates named every possible way.
var decideCases = []struct {
	name     string
	fixture  string
	nsLabels map[string]string
	stsLabel string // value of petfabric.io/inject on the StatefulSet, "" for none
	want     []wantTemplate
}{
	{
		name: "cockroachdb blog, alpha annotation anything, opted-in namespace: default class", fixture: "cockroachdb.yaml", nsLabels: optedIn,
		want: []wantTemplate{{0, "datadir", "datera", 1, plain}},
	},
	{
		name: "cockroachdb blog, namespace not opted in: left alone", fixture: "cockroachdb.yaml", nsLabels: notOptedIn,
	},
	{
		name: "cockroachdb blog, no namespace labels at all: left alone", fixture: "cockroachdb.yaml",
	},
	{
		name: "cockroachdb blog, opted-in namespace but StatefulSet opted out", fixture: "cockroachdb.yaml", nsLabels: optedIn, stsLabel: "disabled",
	},
	{
		name: "cockroachdb blog, StatefulSet label enabled does not opt a namespace in", fixture: "cockroachdb.yaml", nsLabels: notOptedIn, stsLabel: "enabled",
	},
	{
		name: "Datera blog test-petset, storageClassName datera-gold", fixture: "test-petset.yaml", nsLabels: notOptedIn,
		want: []wantTemplate{{0, "pv-claim", "datera-gold", 100, gold}},
	},
	{
		name: "Datera blog test-petset opted out: left alone even though it names a Datera class", fixture: "test-petset.yaml", nsLabels: optedIn, stsLabel: "disabled",
	},
	{
		name: "mixed templates, namespace not opted in", fixture: "mixed.yaml", nsLabels: notOptedIn,
		want: []wantTemplate{
			{0, "data", "datera-gold", 2, withDefaults(map[string]string{pvoptions.OptReplica: "2", pvoptions.OptFSType: "xfs", pvoptions.OptPlacementMode: "hybrid", pvoptions.OptMaxIOPS: "1000", pvoptions.OptBackstoreServer: "tlx170.tlx.daterainc.com:7717"})},
			{2, "cache", "datera-silver", 2, silver},
			{4, "wal", "datera-silver", 1, silver},
		},
	},
	{
		name: "mixed templates, opted-in namespace: the classless one gets the default class too", fixture: "mixed.yaml", nsLabels: optedIn,
		want: []wantTemplate{
			{0, "data", "datera-gold", 2, withDefaults(map[string]string{pvoptions.OptReplica: "2", pvoptions.OptFSType: "xfs", pvoptions.OptPlacementMode: "hybrid", pvoptions.OptMaxIOPS: "1000", pvoptions.OptBackstoreServer: "tlx170.tlx.daterainc.com:7717"})},
			{2, "cache", "datera-silver", 2, silver},
			{4, "wal", "datera-silver", 1, silver},
			{5, "archive", "datera", 3, plain},
		},
	},
}

func loadCase(t *testing.T, fixture, stsLabel string) (*appsv1.StatefulSet, []byte) {
	sts, raw := loadSTS(t, fixture)
	if stsLabel != "" {
		var obj map[string]any
		require.NoError(t, json.Unmarshal(raw, &obj))
		obj["metadata"].(map[string]any)["labels"] = map[string]any{InjectLabel: stsLabel}
		raw = mustJSON(t, obj)
		sts = stsFromJSON(t, raw)
	}
	return sts, raw
}

func TestDecideFixtures(t *testing.T) {
	classes := loadClasses(t)
	for _, tc := range decideCases {
		t.Run(tc.name, func(t *testing.T) {
			sts, _ := loadCase(t, tc.fixture, tc.stsLabel)
			plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, NamespaceLabels: tc.nsLabels, Classes: classes})
			require.NoError(t, err)
			assert.Equal(t, sts.Namespace, plan.Namespace)
			assert.Equal(t, sts.Name, plan.StatefulSet)
			require.Len(t, plan.Templates, len(tc.want))
			for i, w := range tc.want {
				tp := plan.Templates[i]
				assert.Equal(t, w.index, tp.Index, "template %s", w.name)
				assert.Equal(t, w.name, tp.Name)
				assert.Equal(t, w.class, tp.Class.Name, "template %s", w.name)
				assert.Equal(t, w.sizeGiB, tp.SizeGiB(), "template %s", w.name)
				assert.Equal(t, w.options, tp.Options.Raw(), "template %s", w.name)
				assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, tp.AccessModes)
			}
		})
	}
}

// TestPatchFixtures applies each fixture's patch as the apiserver would and checks: the
// result is exactly Apply's; the pinned templates carry the class where the PV controller
// looks for it; nothing outside the Datera-bound templates changed; deciding again on the
// patched object yields no patch (idempotence, also under reinvocation); and an UPDATE
// (PinnedOnly) sees the same templates.
func TestPatchFixtures(t *testing.T) {
	classes := loadClasses(t)
	for _, tc := range decideCases {
		t.Run(tc.name, func(t *testing.T) {
			sts, raw := loadCase(t, tc.fixture, tc.stsLabel)
			in := Input{NamespaceUID: testNSUID, StatefulSet: sts, NamespaceLabels: tc.nsLabels, Classes: classes}
			plan, err := Decide(testCfg, in)
			require.NoError(t, err)
			patch, err := plan.Patch(raw, sts)
			require.NoError(t, err)
			if len(tc.want) == 0 {
				assert.Nil(t, patch, "nothing to pin, nothing to patch")
				return
			}
			require.NotNil(t, patch)
			patchedRaw := applyPatch(t, raw, patch)
			patched := stsFromJSON(t, patchedRaw)
			assert.Equal(t, applyPlan(plan, sts), patched, "the patch does what applyPlan does")

			bound := map[int]wantTemplate{}
			for _, w := range tc.want {
				bound[w.index] = w
			}
			for i, tpl := range patched.Spec.VolumeClaimTemplates {
				orig := sts.Spec.VolumeClaimTemplates[i]
				w, isBound := bound[i]
				if !isBound {
					assert.Equal(t, orig, tpl, "template %s is not Datera's and must stay untouched", orig.Name)
					continue
				}
				require.NotNil(t, tpl.Spec.StorageClassName)
				assert.Equal(t, w.class, *tpl.Spec.StorageClassName)
				if _, ok := orig.Annotations[BetaClassAnnotation]; ok {
					assert.Equal(t, w.class, tpl.Annotations[BetaClassAnnotation], "the beta annotation, which the PV controller prefers, names the class")
				} else {
					assert.NotContains(t, tpl.Annotations, BetaClassAnnotation, "no beta annotation is invented")
				}
				assert.Equal(t, sts.Name, tpl.Annotations[AnnStatefulSet])
				assert.Equal(t, orig.Name, tpl.Annotations[AnnClaimTemplate])
				for k, v := range w.options {
					if AdminOnly(k) {
						assert.NotContains(t, tpl.Annotations, AnnotationPrefix+k, "admin-only options are not recorded on templates")
					} else {
						assert.Equal(t, v, tpl.Annotations[AnnotationPrefix+k], "option %s recorded", k)
					}
				}
				for k, v := range orig.Annotations { // the user's own annotations stay
					if k != BetaClassAnnotation {
						assert.Equal(t, v, tpl.Annotations[k])
					}
				}
				assert.Equal(t, orig.Spec.Resources, tpl.Spec.Resources)
				assert.Equal(t, orig.Spec.AccessModes, tpl.Spec.AccessModes)
			}
			// Outside the templates nothing changed.
			a, b := sts.DeepCopy(), patched.DeepCopy()
			a.Spec.VolumeClaimTemplates, b.Spec.VolumeClaimTemplates = nil, nil
			assert.Equal(t, a, b)

			// Idempotence: deciding on the patched object again gives the same plan and no patch.
			again, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: patched, NamespaceLabels: tc.nsLabels, Classes: classes})
			require.NoError(t, err)
			assert.Equal(t, plan.Templates, again.Templates)
			p2, err := again.Patch(patchedRaw, patched)
			require.NoError(t, err)
			assert.Nil(t, p2, "second patch: %s", p2)

			// UPDATE: the stored (patched) templates are all pinned, whatever the namespace's
			// labels are by then.
			for _, ns := range []map[string]string{tc.nsLabels, notOptedIn} {
				upd, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: patched, NamespaceLabels: ns, Classes: classes, PinnedOnly: true})
				require.NoError(t, err)
				assert.Equal(t, plan.Templates, upd.Templates)
			}
		})
	}
}

// TestPinnedOnly: on UPDATE only templates whose stored class fields already name the Datera
// class count: a StatefulSet stored before the webhook existed (or while it was bypassed)
// gets no PVs that its claims could never bind.
func TestPinnedOnly(t *testing.T) {
	classes := loadClasses(t)
	sts, _ := loadSTS(t, "mixed.yaml")
	plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, NamespaceLabels: optedIn, Classes: classes, PinnedOnly: true})
	require.NoError(t, err)
	var names []string
	for _, tp := range plan.Templates {
		names = append(names, tp.Name)
	}
	// data names datera-gold in storageClassName; cache in the beta annotation. wal (alpha
	// annotation) and archive (classless) were never pinned.
	assert.Equal(t, []string{"data", "cache"}, names)

	// A beta annotation that disagrees with storageClassName decides for the PV controller.
	tpl := &sts.Spec.VolumeClaimTemplates[0]
	tpl.Annotations[BetaClassAnnotation] = "standard"
	plan, err = Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, NamespaceLabels: optedIn, Classes: classes, PinnedOnly: true})
	require.NoError(t, err)
	require.Len(t, plan.Templates, 1)
	assert.Equal(t, "cache", plan.Templates[0].Name)
}

// TestLegacyBetaAnnotation covers the fact checked on v1.36.3: the PV controller honours the
// beta annotation over storageClassName, so a pinned template must not keep another value.
func TestLegacyBetaAnnotation(t *testing.T) {
	classes := loadClasses(t)
	cases := []struct {
		name      string
		beta      *string // nil: no annotation
		sc        *string
		nsLabels  map[string]string
		wantClass string // "" for not Datera-bound
		wantBeta  *string
	}{
		{name: "beta names a Datera class", beta: ptr.To("datera-gold"), wantClass: "datera-gold", wantBeta: ptr.To("datera-gold")},
		{name: "beta names a non-Datera class", beta: ptr.To("standard")},
		{name: "beta names a non-Datera class in an opted-in namespace", beta: ptr.To("standard"), nsLabels: optedIn},
		// The beta annotation decides for the PV controller, so it decides here too (ClaimClass).
		{name: "beta non-Datera next to a Datera storageClassName: not ours", beta: ptr.To("anything"), sc: ptr.To("datera-gold")},
		{name: "empty beta (no class) next to a Datera storageClassName: not ours", beta: ptr.To(""), sc: ptr.To("datera-gold")},
		{name: "beta Datera next to a non-Datera storageClassName: storageClassName pinned to it", beta: ptr.To("datera-gold"), sc: ptr.To("standard"), wantClass: "datera-gold", wantBeta: ptr.To("datera-gold")},
		{name: "beta Datera next to an explicitly empty storageClassName", beta: ptr.To("datera-silver"), sc: ptr.To(""), wantClass: "datera-silver", wantBeta: ptr.To("datera-silver")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sts, _ := loadSTS(t, "test-petset.yaml")
			tpl := &sts.Spec.VolumeClaimTemplates[0]
			tpl.Spec.StorageClassName = tc.sc
			if tc.beta != nil {
				tpl.Annotations = map[string]string{BetaClassAnnotation: *tc.beta}
			}
			raw := mustJSON(t, sts)
			plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, NamespaceLabels: tc.nsLabels, Classes: classes})
			require.NoError(t, err)
			if tc.wantClass == "" {
				assert.Empty(t, plan.Templates)
				return
			}
			require.Len(t, plan.Templates, 1)
			assert.Equal(t, tc.wantClass, plan.Templates[0].Class.Name)
			patch, err := plan.Patch(raw, sts)
			require.NoError(t, err)
			got := stsFromJSON(t, applyPatch(t, raw, patch)).Spec.VolumeClaimTemplates[0]
			assert.Equal(t, tc.wantClass, *got.Spec.StorageClassName)
			assert.Equal(t, *tc.wantBeta, got.Annotations[BetaClassAnnotation])
		})
	}
}

// TestDefaultClassMissing: an opted-in namespace whose default class does not exist gets a
// denial that says so, naming the template.
func TestDefaultClassMissing(t *testing.T) {
	classes := loadClasses(t)
	delete(classes, "datera")
	sts, _ := loadSTS(t, "cockroachdb.yaml")
	_, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, NamespaceLabels: optedIn, Classes: classes})
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "spec.volumeClaimTemplates[0]", ve.Field)
	assert.Contains(t, err.Error(), `the default Datera StorageClass "datera" does not exist`)

	// No default configured: classless templates are simply not Datera's.
	cfg := testCfg
	cfg.DefaultClass = ""
	plan, err := Decide(cfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, NamespaceLabels: optedIn, Classes: loadClasses(t)})
	require.NoError(t, err)
	assert.Empty(t, plan.Templates)
}

// TestOptionPrecedence: template annotation petfabric.io/<option> > StorageClass parameter >
// webhook default > built-in default, for every option a user may set.
func TestOptionPrecedence(t *testing.T) {
	type layer struct{ ann, class, def string }
	cases := []struct {
		key  string
		l    layer
		want string
	}{
		{pvoptions.OptReplica, layer{"1", "2", "3"}, "1"},
		{pvoptions.OptReplica, layer{"", "2", "1"}, "2"},
		{pvoptions.OptReplica, layer{"", "", "1"}, "1"},
		{pvoptions.OptFSType, layer{"ext3", "ext4", "xfs"}, "ext3"},
		{pvoptions.OptFSType, layer{"", "ext4", "xfs"}, "ext4"},
		{pvoptions.OptFSType, layer{"", "", "ext4"}, "ext4"},
		// size is accepted up to the request (100 GiB here) and never changes the size.
		{pvoptions.OptSize, layer{"100", "50", "20"}, "100"},
		{pvoptions.OptSize, layer{"", "50", "20"}, "50"},
		{pvoptions.OptSize, layer{"", "", "20"}, "20"},
		// Choices: a template may pick the class's value or one of its allowed* list.
		{pvoptions.OptTemplate, layer{"tpl_a", "tpl_b", "tpl_c"}, "tpl_a"},
		{pvoptions.OptTemplate, layer{"", "tpl_b", "tpl_c"}, "tpl_b"},
		{pvoptions.OptPlacementMode, layer{"all_flash", "hybrid", "single_flash"}, "all_flash"},
		{pvoptions.OptPlacementMode, layer{"", "", "single_flash"}, "single_flash"},
		{pvoptions.OptMaxIOPS, layer{"100", "200", "300"}, "100"},
		{pvoptions.OptMaxIOPS, layer{"", "200", "300"}, "200"},
		{pvoptions.OptMaxBW, layer{"0", "0", "300"}, "0"},
		{pvoptions.OptMaxBW, layer{"", "", "300"}, "300"},
		{pvoptions.OptIPPool, layer{"pool_a", "pool_b", "pool_c"}, "pool_a"},
		{pvoptions.OptIPPool, layer{"", "pool_b", "pool_c"}, "pool_b"},
		// Admin-only options: class > default; a template cannot set them (TestInvalidOptions).
		{pvoptions.OptBackstoreServer, layer{"", "a.example:7718", "b.example:7717"}, "a.example:7718"},
		{pvoptions.OptBackstoreServer, layer{"", "", "b.example:7717"}, "b.example:7717"},
		{pvoptions.OptTenant, layer{"", "/root/team_a", "/root/team_b"}, "/root/team_a"},
		{pvoptions.OptTenant, layer{"", "", "/root"}, "/root"},
		{OptSecretName, layer{"", "class-secret", "default-secret"}, "class-secret"},
		{OptSecretNamespace, layer{"", "", "default-ns"}, "default-ns"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s=%s/%s/%s", tc.key, tc.l.ann, tc.l.class, tc.l.def), func(t *testing.T) {
			cfg := Config{ClusterID: "pf", Defaults: map[string]string{
				pvoptions.OptBackstoreServer: "d.example:7718", OptSecretName: "s", OptSecretNamespace: "ns",
			}}
			params := map[string]string{}
			if tc.l.def != "" {
				cfg.Defaults[tc.key] = tc.l.def
			}
			if tc.l.class != "" {
				params[tc.key] = tc.l.class
			}
			if list, ok := allowedListParam[tc.key]; ok && tc.l.ann != "" {
				params[list] = tc.l.ann // the admin allows the value the template picks
			}
			classes := map[string]Class{"c": {Name: "c", Parameters: params, ReclaimPolicy: corev1.PersistentVolumeReclaimRetain}}
			sts, _ := loadSTS(t, "test-petset.yaml")
			tpl := &sts.Spec.VolumeClaimTemplates[0]
			tpl.Spec.StorageClassName = ptr.To("c")
			if tc.l.ann != "" {
				tpl.Annotations = map[string]string{AnnotationPrefix + tc.key: tc.l.ann}
			}
			plan, err := Decide(cfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: classes})
			require.NoError(t, err)
			require.Len(t, plan.Templates, 1)
			assert.Equal(t, tc.want, plan.Templates[0].Options.Raw()[tc.key])
			pv, err := plan.Ordinal(plan.Templates[0], 0).PersistentVolume(cfg)
			require.NoError(t, err)
			fv := pv.Spec.FlexVolume
			switch tc.key {
			case pvoptions.OptFSType:
				assert.Equal(t, tc.want, fv.FSType)
			case OptSecretName:
				assert.Equal(t, tc.want, fv.SecretRef.Name)
			case OptSecretNamespace:
				assert.Equal(t, tc.want, fv.SecretRef.Namespace)
			case pvoptions.OptSize: // the request, whatever the option says
				assert.Equal(t, "100", fv.Options["size"])
				assert.Equal(t, int64(100)<<30, pv.Spec.Capacity.Storage().Value())
			case pvoptions.OptMaxBW, pvoptions.OptMaxIOPS:
				if tc.want == "0" { // 0 = unlimited: the option is left out
					assert.NotContains(t, fv.Options, tc.key)
				} else {
					assert.Equal(t, tc.want, fv.Options[tc.key])
				}
			default:
				assert.Equal(t, tc.want, fv.Options[tc.key])
			}
		})
	}

	t.Run("built-in defaults: 3 replicas, xfs, size from the request", func(t *testing.T) {
		classes := map[string]Class{"c": {Name: "c"}}
		sts, _ := loadSTS(t, "test-petset.yaml")
		sts.Spec.VolumeClaimTemplates[0].Spec.StorageClassName = ptr.To("c")
		plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: classes})
		require.NoError(t, err)
		o := plan.Templates[0].Options
		assert.Equal(t, 3, o.Replica)
		assert.Equal(t, "xfs", o.FSType)
		assert.Equal(t, int64(100), plan.Templates[0].SizeGiB())
	})
}

// TestInvalidOptions: every invalid input is denied with a message naming the field and the
// allowed values, never turned into a PV that the flex driver would refuse at mount time.
func TestInvalidOptions(t *testing.T) {
	const ann = "spec.volumeClaimTemplates[0].metadata.annotations"
	cases := []struct {
		name      string
		ann       map[string]string // template annotations
		class     map[string]string // parameters of class "c" (the template's class)
		defaults  map[string]string // replaces testCfg.Defaults when non-nil
		mutate    func(*appsv1.StatefulSet)
		wantField string
		wantMsg   []string // substrings of the message
	}{
		{name: "replica 0", ann: map[string]string{"petfabric.io/replica": "0"},
			wantField: ann + "[petfabric.io/replica]", wantMsg: []string{`"0"`, "from 1 to 5"}},
		{name: "replica 6", ann: map[string]string{"petfabric.io/replica": "6"},
			wantField: ann + "[petfabric.io/replica]", wantMsg: []string{`"6"`, "from 1 to 5"}},
		{name: "replica not a number", ann: map[string]string{"petfabric.io/replica": "three"},
			wantField: ann + "[petfabric.io/replica]", wantMsg: []string{"from 1 to 5"}},
		{name: "replica 6 from the class names the class parameter", class: map[string]string{"replica": "6"},
			wantField: "storageclass c.parameters[replica]", wantMsg: []string{"from 1 to 5"}},
		{name: "replica 0 from the webhook default names the default", defaults: withDefaults(map[string]string{"replica": "0"}),
			wantField: "webhook default replica", wantMsg: []string{"from 1 to 5"}},
		{name: "non-numeric size", ann: map[string]string{"petfabric.io/size": "ten"},
			wantField: ann + "[petfabric.io/size]", wantMsg: []string{`"ten"`, "a whole number of GiB from 1 to the claim's storage request (100 GiB)"}},
		{name: "size with a unit", ann: map[string]string{"petfabric.io/size": "200Gi"},
			wantField: ann + "[petfabric.io/size]", wantMsg: []string{"a whole number of GiB"}},
		// Security: the size is the request, which ResourceQuota counts.
		{name: "size above the request (quota bypass)", ann: map[string]string{"petfabric.io/size": "32768"},
			wantField: ann + "[petfabric.io/size]", wantMsg: []string{"to the claim's storage request (100 GiB)", "ResourceQuota"}},
		{name: "size above the request from the class", class: map[string]string{"size": "101"},
			wantField: "storageclass c.parameters[size]", wantMsg: []string{"(100 GiB)"}},
		// Security: a template gets no more than the admin's class grants.
		{name: "replica above the class's", ann: map[string]string{"petfabric.io/replica": "5"}, class: map[string]string{"replica": "2"},
			wantField: ann + "[petfabric.io/replica]", wantMsg: []string{"at most 2", "storageclass c.parameters[replica]"}},
		{name: "replica above the webhook default's", ann: map[string]string{"petfabric.io/replica": "4"}, defaults: withDefaults(map[string]string{"replica": "3"}),
			wantField: ann + "[petfabric.io/replica]", wantMsg: []string{"at most 3", "webhook default replica"}},
		{name: "unlimited maxIops under a capped class", ann: map[string]string{"petfabric.io/maxIops": "0"}, class: map[string]string{"maxIops": "1000"},
			wantField: ann + "[petfabric.io/maxIops]", wantMsg: []string{"from 1 to 1000", "0 would be unlimited"}},
		{name: "maxIops above the class's", ann: map[string]string{"petfabric.io/maxIops": "1001"}, class: map[string]string{"maxIops": "1000"},
			wantField: ann + "[petfabric.io/maxIops]", wantMsg: []string{"from 1 to 1000"}},
		{name: "maxBW above the class's", ann: map[string]string{"petfabric.io/maxBW": "9999"}, class: map[string]string{"maxBW": "5000"},
			wantField: ann + "[petfabric.io/maxBW]", wantMsg: []string{"from 1 to 5000"}},
		{name: "template the class does not offer", ann: map[string]string{"petfabric.io/template": "huge"}, class: map[string]string{"template": "small", "allowedTemplates": "medium, large"},
			wantField: ann + "[petfabric.io/template]", wantMsg: []string{"one of small, medium, large", "allowedTemplates"}},
		{name: "template on a class that offers none", ann: map[string]string{"petfabric.io/template": "huge"},
			wantField: ann + "[petfabric.io/template]", wantMsg: []string{"allows no template choice", "allowedTemplates"}},
		{name: "ipPool the class does not offer", ann: map[string]string{"petfabric.io/ipPool": "tenant_b"}, class: map[string]string{"ipPool": "tenant_a"},
			wantField: ann + "[petfabric.io/ipPool]", wantMsg: []string{"one of tenant_a", "allowedIPPools"}},
		{name: "placementMode the class does not offer", ann: map[string]string{"petfabric.io/placementMode": "all_flash"}, class: map[string]string{"placementMode": "hybrid"},
			wantField: ann + "[petfabric.io/placementMode]", wantMsg: []string{"one of hybrid", "allowedPlacementModes"}},
		{name: "ReadWriteMany", mutate: func(s *appsv1.StatefulSet) {
			s.Spec.VolumeClaimTemplates[0].Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce, corev1.ReadWriteMany}
		}, wantField: "spec.volumeClaimTemplates[0].spec.accessModes", wantMsg: []string{`"ReadWriteMany"`, "never mount read-write"}},
		{name: "unknown fsType", ann: map[string]string{"petfabric.io/fsType": "btrfs"},
			wantField: ann + "[petfabric.io/fsType]", wantMsg: []string{`"btrfs"`, "one of xfs, ext4, ext3"}},
		{name: "bad placementMode", ann: map[string]string{"petfabric.io/placementMode": "fast"}, class: map[string]string{"allowedPlacementModes": "fast"},
			wantField: ann + "[petfabric.io/placementMode]", wantMsg: []string{`"fast"`, "one of hybrid, single_flash, all_flash"}},
		{name: "bad template name", ann: map[string]string{"petfabric.io/template": "a b"}, class: map[string]string{"allowedTemplates": "a b"},
			wantField: ann + "[petfabric.io/template]", wantMsg: []string{"app_template name"}},
		{name: "negative maxIops", ann: map[string]string{"petfabric.io/maxIops": "-1"},
			wantField: ann + "[petfabric.io/maxIops]", wantMsg: []string{"from 0 to 10000000"}},
		{name: "maxIops above Datera's maximum", ann: map[string]string{"petfabric.io/maxIops": "10000001"},
			wantField: ann + "[petfabric.io/maxIops]", wantMsg: []string{"from 0 to 10000000"}},
		{name: "maxBW above Datera's maximum", ann: map[string]string{"petfabric.io/maxBW": "10240001"},
			wantField: ann + "[petfabric.io/maxBW]", wantMsg: []string{"KiB/s from 0 to 10240000"}},
		{name: "bad ipPool", ann: map[string]string{"petfabric.io/ipPool": "x"}, class: map[string]string{"allowedIPPools": "x"},
			wantField: ann + "[petfabric.io/ipPool]", wantMsg: []string{"ip_pool"}},
		{name: "missing backstoreServer", defaults: map[string]string{OptSecretName: "s", OptSecretNamespace: "n"},
			wantField: "storageclass c.parameters[backstoreServer]", wantMsg: []string{"host:port of the Datera management API", "set by the class or the webhook"}},
		{name: "backstoreServer without a port", class: map[string]string{"backstoreServer": "datera.example"},
			wantField: "storageclass c.parameters[backstoreServer]", wantMsg: []string{"port 7718 (https) or 7717 (http)"}},
		{name: "backstoreServer on a port the flex driver cannot map to a scheme", class: map[string]string{"backstoreServer": "datera.example:8443"},
			wantField: "storageclass c.parameters[backstoreServer]", wantMsg: []string{"port 7718 (https) or 7717 (http)"}},
		{name: "backstoreServer as a URL", class: map[string]string{"backstoreServer": "https://datera.example:7718"},
			wantField: "storageclass c.parameters[backstoreServer]", wantMsg: []string{"host:port"}},
		{name: "missing credentials secret", defaults: map[string]string{pvoptions.OptBackstoreServer: "d.example:7718"},
			wantField: "storageclass c.parameters[secretName, secretNamespace]", wantMsg: []string{"credentials Secret"}},
		{name: "bad tenant", class: map[string]string{"tenant": "/other/x"},
			wantField: "storageclass c.parameters[tenant]", wantMsg: []string{"/root or /root/<name>"}},
		// Security: a user must not choose where the credentials are sent or which ones.
		{name: "template sets backstoreServer", ann: map[string]string{"petfabric.io/backstoreServer": "evil.example:7717"},
			wantField: ann + "[petfabric.io/backstoreServer]", wantMsg: []string{"set only by the StorageClass parameters or the webhook configuration"}},
		{name: "template sets secretName", ann: map[string]string{"petfabric.io/secretName": "other"},
			wantField: ann + "[petfabric.io/secretName]", wantMsg: []string{"set only by the StorageClass"}},
		{name: "template sets secretNamespace", ann: map[string]string{"petfabric.io/secretNamespace": "kube-system"},
			wantField: ann + "[petfabric.io/secretNamespace]", wantMsg: []string{"set only by the StorageClass"}},
		{name: "template sets tenant", ann: map[string]string{"petfabric.io/tenant": "/root"},
			wantField: ann + "[petfabric.io/tenant]", wantMsg: []string{"set only by the StorageClass"}},
		{name: "Block volume mode", mutate: func(s *appsv1.StatefulSet) {
			s.Spec.VolumeClaimTemplates[0].Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
		}, wantField: "spec.volumeClaimTemplates[0].spec.volumeMode", wantMsg: []string{`"Block"`, "Filesystem"}},
		{name: "data source", mutate: func(s *appsv1.StatefulSet) {
			s.Spec.VolumeClaimTemplates[0].Spec.DataSource = &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "x"}
		}, wantField: "spec.volumeClaimTemplates[0].spec.dataSource", wantMsg: []string{"start empty"}},
		{name: "no storage request", mutate: func(s *appsv1.StatefulSet) {
			s.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests = nil
		}, wantField: "spec.volumeClaimTemplates[0].spec.resources.requests.storage", wantMsg: []string{"a positive storage request"}},
		{name: "request larger than any Datera volume", mutate: func(s *appsv1.StatefulSet) {
			s.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("33Ti")
		}, wantField: "spec.volumeClaimTemplates[0].spec.resources.requests.storage", wantMsg: []string{`"33Ti"`, "at most 32768Gi"}},
		{name: "request that overflows int64 bytes", mutate: func(s *appsv1.StatefulSet) {
			s.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("9Ei")
		}, wantField: "spec.volumeClaimTemplates[0].spec.resources.requests.storage", wantMsg: []string{"at most 32768Gi"}},
		{name: "generateName (no name yet at admission)", mutate: func(s *appsv1.StatefulSet) {
			s.GenerateName, s.Name = "web-", ""
		}, wantField: "metadata.name", wantMsg: []string{"generateName is not supported"}},
		{name: "StatefulSet name not a DNS label", mutate: func(s *appsv1.StatefulSet) { s.Name = "Web" },
			wantField: "metadata.name", wantMsg: []string{`"Web"`, "RFC 1123 label"}},
		{name: "StatefulSet name longer than a DNS label", mutate: func(s *appsv1.StatefulSet) { s.Name = strings.Repeat("w", 64) },
			wantField: "metadata.name", wantMsg: []string{"63"}},
		{name: "template name not a DNS label", mutate: func(s *appsv1.StatefulSet) { s.Spec.VolumeClaimTemplates[0].Name = "pv.claim" },
			wantField: "spec.volumeClaimTemplates[0].metadata.name", wantMsg: []string{`"pv.claim"`}},
		{name: "template without a name", mutate: func(s *appsv1.StatefulSet) { s.Spec.VolumeClaimTemplates[0].Name = "" },
			wantField: "spec.volumeClaimTemplates[0].metadata.name", wantMsg: []string{"needs a name"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testCfg
			if tc.defaults != nil {
				cfg.Defaults = tc.defaults
			}
			classes := map[string]Class{"c": {Name: "c", Parameters: tc.class}}
			sts, _ := loadSTS(t, "test-petset.yaml")
			sts.Spec.VolumeClaimTemplates[0].Spec.StorageClassName = ptr.To("c")
			sts.Spec.VolumeClaimTemplates[0].Annotations = tc.ann
			if tc.mutate != nil {
				tc.mutate(sts)
			}
			plan, err := Decide(cfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: classes})
			var ve *ValidationError
			require.ErrorAs(t, err, &ve, "plan: %+v", plan)
			assert.Equal(t, tc.wantField, ve.Field)
			assert.True(t, strings.HasPrefix(err.Error(), tc.wantField+": "), err.Error())
			for _, m := range tc.wantMsg {
				assert.Contains(t, err.Error(), m)
			}
		})
	}
}

// TestInvalidOnlyForDateraTemplates: a non-Datera template with junk annotations or names is
// not petfabric's business.
func TestInvalidOnlyForDateraTemplates(t *testing.T) {
	sts, _ := loadSTS(t, "mixed.yaml")
	logs := &sts.Spec.VolumeClaimTemplates[1]
	logs.Annotations = map[string]string{"petfabric.io/replica": "99", "petfabric.io/backstoreServer": "x"}
	logs.Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
	_, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: loadClasses(t)})
	require.NoError(t, err)
}

func TestClassFromStorageClass(t *testing.T) {
	_, ok := ClassFromStorageClass(&storagev1.StorageClass{Provisioner: "kubernetes.io/no-provisioner"})
	assert.False(t, ok)
	c, ok := ClassFromStorageClass(&storagev1.StorageClass{Provisioner: Provisioner})
	require.True(t, ok)
	assert.Equal(t, corev1.PersistentVolumeReclaimDelete, c.ReclaimPolicy, "Kubernetes' default")
	classes := loadClasses(t)
	assert.Equal(t, corev1.PersistentVolumeReclaimRetain, classes["datera-gold"].ReclaimPolicy)
	assert.Equal(t, []string{"noatime"}, classes["datera-silver"].MountOptions)

	sts, _ := loadSTS(t, "mixed.yaml")
	plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, NamespaceLabels: optedIn, Classes: classes})
	require.NoError(t, err)
	assert.Equal(t, []string{"datera", "datera-gold", "datera-silver"}, plan.ClassNames())
}

// TestDecideErrorsAreValidationErrors: callers map them to 422 (webhook) or an event
// (reconcile loop) by type.
func TestDecideErrorsAreValidationErrors(t *testing.T) {
	sts, _ := loadSTS(t, "test-petset.yaml")
	sts.Spec.VolumeClaimTemplates[0].Annotations = map[string]string{"petfabric.io/replica": "9"}
	_, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: loadClasses(t)})
	var ve *ValidationError
	assert.True(t, errors.As(err, &ve))
	// The format other packages' tests rely on.
	assert.Equal(t, `spec.volumeClaimTemplates[0].metadata.annotations[petfabric.io/replica]: invalid value "9": an integer replica count from 1 to 5`, err.Error())
}
