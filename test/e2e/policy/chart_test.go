package policy

import (
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/petfabric/petfabric/test/helmchart"
)

// TestChartLintsStrict: helm lint --strict finds nothing, with the default values and with
// the policies switched off.
func TestChartLintsStrict(t *testing.T) {
	for _, set := range []string{"policies.enabled=true", "policies.enabled=false"} {
		out, err := runHelm(t, "", "lint", "--strict", helmchart.ChartDir(), "--namespace", releaseNS, "--set", set)
		require.NoError(t, err, "helm lint --strict --set %s:\n%s", set, out)
		t.Logf("helm lint --strict --set %s: %s", set, out)
	}
}

// TestChartRendersPoliciesWithDenyBindings: the default render holds exactly the three
// policies (and no other policy or binding), each failing closed, each with a binding of the same name that denies.
func TestChartRendersPoliciesWithDenyBindings(t *testing.T) {
	objs := objects(t, render(t, ""))
	kinds := map[string][]string{}
	byName := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if o.GetKind() != "ValidatingAdmissionPolicy" && o.GetKind() != "ValidatingAdmissionPolicyBinding" {
			continue // the programs' objects; test/chart checks those
		}
		require.Equal(t, "admissionregistration.k8s.io/v1", o.GetAPIVersion(), "%s %s", o.GetKind(), o.GetName())
		kinds[o.GetKind()] = append(kinds[o.GetKind()], o.GetName())
		byName[o.GetKind()+"/"+o.GetName()] = o
	}
	want := []string{podPolicy, pvPolicy, reportPolicy, gatePolicy}
	sort.Strings(want)
	for _, k := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		sort.Strings(kinds[k])
		require.Equal(t, want, kinds[k], k)
	}
	for _, name := range want {
		p := byName["ValidatingAdmissionPolicy/"+name]
		fp, _, _ := unstructured.NestedString(p.Object, "spec", "failurePolicy")
		assert.Equal(t, "Fail", fp, "%s failurePolicy", name)
		b := byName["ValidatingAdmissionPolicyBinding/"+name]
		ref, _, _ := unstructured.NestedString(b.Object, "spec", "policyName")
		assert.Equal(t, name, ref, "binding %s policyName", name)
		actions, _, _ := unstructured.NestedStringSlice(b.Object, "spec", "validationActions")
		assert.Equal(t, []string{"Deny"}, actions, "binding %s validationActions", name)
	}
}

// TestPoliciesDisabledRendersNoPolicy: policies.enabled=false renders no policy and no
// binding.
func TestPoliciesDisabledRendersNoPolicy(t *testing.T) {
	objs := objects(t, render(t, "policies:\n  enabled: false\n"))
	for _, o := range objs {
		assert.NotContains(t, []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}, o.GetKind(), o.GetName())
	}
	assert.NotEmpty(t, objs, "the programs are still rendered")
}

// TestChartRejectsBadValues: a wrong value stops the render with an error naming the value,
// instead of rendering policies that silently allow or deny the wrong identities.
func TestChartRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		want         []string
	}{
		{"users is not a list", "policies:\n  pvManagers:\n    users: alice\n", []string{"pvManagers", "users"}},
		{"empty user name", "policies:\n  pvManagers:\n    users: ['']\n", []string{"pvManagers", "users"}},
		{"group is not a string", "policies:\n  pvManagers:\n    groups: [1]\n", []string{"pvManagers", "groups"}},
		{"misspelt pvManagers", "policies:\n  pvManager:\n    users: [alice]\n", []string{"pvManager"}},
		{"unknown pvManagers key", "policies:\n  pvManagers:\n    user: [alice]\n", []string{"user"}},
		{"enabled is not a boolean", "policies:\n  enabled: 'yes'\n", []string{"enabled"}},
		{"empty webhook ServiceAccount", "serviceAccounts:\n  webhook:\n    name: ''\n", []string{"serviceAccounts", "webhook", "name"}},
		{"invalid agent ServiceAccount", "serviceAccounts:\n  agent:\n    name: Agent_1\n", []string{"serviceAccounts", "agent", "name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helmTemplate(t, tc.values)
			require.Error(t, err, "rendered:\n%s", out)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			t.Logf("rejected: %v", err)
		})
	}
}
