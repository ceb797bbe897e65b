package mutate

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// TestEffectiveClassIsThePVControllers pins the claim's effective StorageClass to the PV
// controller's answer (the beta annotation, when present even empty, wins over
// spec.storageClassName; a fact checked on v1.36.3): the webhook's decision on a template and
// the reconcile loop's reading of a claim made from it must name the same class. The cases
// with both fields set and disagreeing are the ones the webhook used to answer spec-first.
func TestEffectiveClassIsThePVControllers(t *testing.T) {
	classes := loadClasses(t)
	cases := []struct {
		name string
		beta *string // nil: no annotation
		sc   *string // nil: unset
		// pvController is the class the PV controller binds a claim of this template with.
		pvController string
		// bound is whether the webhook makes Datera PVs for it (pvController is a Datera class).
		bound bool
	}{
		{name: "spec only, Datera", sc: ptr.To("datera-gold"), pvController: "datera-gold", bound: true},
		{name: "spec only, not Datera", sc: ptr.To("standard"), pvController: "standard"},
		{name: "beta only, Datera", beta: ptr.To("datera-silver"), pvController: "datera-silver", bound: true},
		{name: "both set, beta Datera, spec not", beta: ptr.To("datera-gold"), sc: ptr.To("standard"), pvController: "datera-gold", bound: true},
		{name: "both set, spec Datera, beta not", beta: ptr.To("standard"), sc: ptr.To("datera-gold"), pvController: "standard"},
		{name: "both set, two Datera classes", beta: ptr.To("datera-silver"), sc: ptr.To("datera-gold"), pvController: "datera-silver", bound: true},
		{name: "empty beta next to a Datera spec", beta: ptr.To(""), sc: ptr.To("datera-gold"), pvController: ""},
		{name: "Datera beta next to an empty spec", beta: ptr.To("datera-gold"), sc: ptr.To(""), pvController: "datera-gold", bound: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sts, _ := loadSTS(t, "test-petset.yaml")
			tpl := &sts.Spec.VolumeClaimTemplates[0]
			tpl.Spec.StorageClassName = tc.sc
			if tc.beta != nil {
				tpl.Annotations = map[string]string{BetaClassAnnotation: *tc.beta}
			}
			plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: classes})
			require.NoError(t, err)
			webhook := ""
			if len(plan.Templates) == 1 {
				webhook = plan.Templates[0].Class.Name
			}
			if tc.bound {
				assert.Equal(t, tc.pvController, webhook, "the webhook pins the template to the class the PV controller binds its claims with")
			} else {
				assert.Empty(t, webhook, "the PV controller binds the claims with class %q, so the webhook must not make Datera PVs for them", tc.pvController)
			}
		})
	}
}

// TestClaimClass: the effective class of a claim, table-driven over the two fields.
func TestClaimClass(t *testing.T) {
	cases := []struct {
		name     string
		beta, sc *string
		want     string
		hasClass bool
	}{
		{name: "neither", want: "", hasClass: false},
		{name: "spec only", sc: ptr.To("a"), want: "a", hasClass: true},
		{name: "empty spec", sc: ptr.To(""), want: "", hasClass: true},
		{name: "beta only", beta: ptr.To("b"), want: "b", hasClass: true},
		{name: "beta wins over spec", beta: ptr.To("b"), sc: ptr.To("a"), want: "b", hasClass: true},
		{name: "empty beta wins over spec", beta: ptr.To(""), sc: ptr.To("a"), want: "", hasClass: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pvc := &corev1.PersistentVolumeClaim{}
			pvc.Spec.StorageClassName = tc.sc
			if tc.beta != nil {
				pvc.Annotations = map[string]string{BetaClassAnnotation: *tc.beta}
			}
			assert.Equal(t, tc.want, ClaimClass(pvc))
			assert.Equal(t, tc.hasClass, HasClass(pvc))
		})
	}
}
