package fake_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera/fake"
)

// TestUserTenants: a user confined to a tenant reaches it and its sub-tenants only; the 403
// names the user and the tenant; unconfined users reach every tenant.
func TestUserTenants(t *testing.T) {
	a := newAPI(t, fake.Options{
		Users:       map[string]string{"admin": "password", "teamb": "teamb_pw"},
		Tenants:     []string{"/root/team-a", "/root/team-b", "/root/team-b/dev"},
		UserTenants: map[string]string{"teamb": "/root/team-b"},
	})
	a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-root", 1))
	teamB := a.login("teamb", "teamb_pw")
	for _, tc := range []struct {
		tenant string
		status int
	}{
		{"", 403}, {"/root", 403}, {"/root/team-a", 403}, {"/root/team-bb", 403},
		{"/root/team-b", 200}, {"/root/team-b/dev", 200},
	} {
		a.tenant = tc.tenant
		status, body := a.raw(http.MethodGet, "/v2.2/app_instances", nil, teamB)
		assert.Equal(t, tc.status, status, "tenant %q: %v", tc.tenant, body)
		if status == 403 {
			assert.Equal(t, "PermissionDeniedError", body["name"])
			assert.Contains(t, body["message"], "user teamb may not access tenant")
		}
	}
	a.tenant = "/root"
	status, _ := a.raw(http.MethodGet, "/v2.2/app_instances/pvc-root", nil, a.token)
	assert.Equal(t, 200, status, "an unconfined user reaches /root")
	a.tenant = "/root/team-b"
	status, _ = a.raw(http.MethodGet, "/v2.2/app_instances", nil, a.token)
	assert.Equal(t, 200, status, "and every sub-tenant")

	_, err := fake.New(fake.Options{UserTenants: map[string]string{"nobody": "/root"}})
	require.ErrorContains(t, err, `names user "nobody"`)
	_, err = fake.New(fake.Options{Users: map[string]string{"teamb": "teamb_pw"}, UserTenants: map[string]string{"teamb": "/root/none"}})
	require.ErrorContains(t, err, `tenant "/root/none", which does not exist`)
}

// TestACLNewestFirst: the option reverses what reads return, not what is stored.
func TestACLNewestFirst(t *testing.T) {
	for _, newest := range []bool{false, true} {
		a := newAPI(t, fake.Options{ACLNewestFirst: newest})
		a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-acl", 1))
		a.mustOK(http.MethodPost, "/initiators", map[string]any{"id": iqnA, "name": "node-a", "force": true})
		a.mustOK(http.MethodPost, "/initiators", map[string]any{"id": iqnB, "name": "node-b", "force": true})
		const acl = "/app_instances/pvc-acl/storage_instances/storage-1/acl_policy"
		a.mustOK(http.MethodPut, acl+"/initiators", map[string]any{"op": "add", "path": "/initiators/" + iqnB})
		a.mustOK(http.MethodPut, acl+"/initiators", map[string]any{"op": "add", "path": "/initiators/" + iqnA})
		var got []string
		for _, in := range data(a.mustOK(http.MethodGet, acl, nil))["initiators"].([]any) {
			got = append(got, in.(map[string]any)["path"].(string))
		}
		want := []string{"/initiators/" + iqnB, "/initiators/" + iqnA}
		if newest {
			want = []string{"/initiators/" + iqnA, "/initiators/" + iqnB}
		}
		assert.Equal(t, want, got, "newest first: %v", newest)
	}
}
