package datera_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
)

func TestMetadataRoundTrip(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-meta", 1))
	require.NoError(t, err)

	md, err := c.GetMetadata(ctx, "pvc-meta")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{}, md, "a new app_instance has empty metadata, not nil")

	md, err = c.SetMetadata(ctx, "pvc-meta", map[string]string{"petfabric_cluster": "k0123", "petfabric_claim": "data-db-0"})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"petfabric_cluster": "k0123", "petfabric_claim": "data-db-0"}, md)

	md, err = c.SetMetadata(ctx, "pvc-meta", map[string]string{"petfabric_claim": "data-db-1", "fs_type": "xfs"})
	require.NoError(t, err)
	want := map[string]string{"petfabric_cluster": "k0123", "petfabric_claim": "data-db-1", "fs_type": "xfs"}
	assert.Equal(t, want, md, "PUT merges: keys not named keep their values, named ones are replaced")
	got, err := c.GetMetadata(ctx, "pvc-meta")
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

func TestMetadataErrors(t *testing.T) {
	s := newSim(t, fake.Options{Users: map[string]string{"admin": "password", "teamb": "teamb_pw"},
		Tenants: []string{"/root/team-b"}, UserTenants: map[string]string{"teamb": "/root/team-b"}})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-meta", 1))
	require.NoError(t, err)
	teamB := newClient(t, s, func(cfg *datera.Config) { cfg.Username, cfg.Password = "teamb", "teamb_pw" })
	teamBAsRoot := teamB
	teamBInOwn := newClient(t, s, func(cfg *datera.Config) {
		cfg.Username, cfg.Password, cfg.Tenant = "teamb", "teamb_pw", "/root/team-b"
	})

	tests := []struct {
		name      string
		client    *datera.Client
		app       string
		kv        map[string]string
		wantClass error
		wantMsg   string
		sent      bool // whether a request reached the server
	}{
		{"get of a missing app_instance", c, "pvc-missing", nil, datera.ErrNotFound, "does not exist", true},
		{"set on a missing app_instance", c, "pvc-missing", map[string]string{"k": "v"}, datera.ErrNotFound, "does not exist", true},
		{"get in a tenant that does not hold it", teamBInOwn, "pvc-meta", nil, datera.ErrNotFound, "does not exist", true},
		{"get by a user confined to another tenant", teamBAsRoot, "pvc-meta", nil, datera.ErrAuth, "may not access tenant /root", true},
		{"set by a user confined to another tenant", teamBAsRoot, "pvc-meta", map[string]string{"k": "v"}, datera.ErrAuth, "may not access tenant /root", true},
		{"invalid app_instance name", c, "../x", nil, datera.ErrValidation, "app_instance name", false},
		{"nothing to set", c, "pvc-meta", map[string]string{}, datera.ErrValidation, "nothing to set", false},
		{"empty key", c, "pvc-meta", map[string]string{"": "v"}, datera.ErrValidation, "must not be empty", false},
		{"not UTF-8", c, "pvc-meta", map[string]string{"k": "\xff"}, datera.ErrValidation, "UTF-8", false},
		{"too large", c, "pvc-meta", map[string]string{"k": strings.Repeat("x", datera.MaxMetadataBytes)}, datera.ErrValidation, "at most 2048 bytes", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.ResetRequests()
			var err error
			if tt.kv == nil {
				_, err = tt.client.GetMetadata(ctx, tt.app)
			} else {
				_, err = tt.client.SetMetadata(ctx, tt.app, tt.kv)
			}
			require.ErrorIs(t, err, tt.wantClass)
			assert.Contains(t, err.Error(), tt.wantMsg)
			sent := s.Requests("GET /app_instances/{ai}/metadata") + s.Requests("PUT /app_instances/{ai}/metadata")
			if tt.sent {
				assert.Equal(t, 1, sent, "one request, not retried")
			} else {
				assert.Zero(t, sent, "refused before sending")
			}
		})
	}
	md, err := c.GetMetadata(ctx, "pvc-meta")
	require.NoError(t, err)
	assert.Empty(t, md, "no failed call changed anything")
}

// TestMetadataRejectsNonStringValues: the client's map[string]string cannot send a non-string
// value, so the server rule is checked on the wire; and a server answering with one is a bad
// response, not a silently dropped key.
func TestMetadataRejectsNonStringValues(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-meta", 1))
	require.NoError(t, err)
	_, err = c.SetMetadata(ctx, "pvc-meta", map[string]string{"keep": "me"})
	require.NoError(t, err)

	token := rawLogin(t, s.http.URL)
	for _, body := range []string{`{"n": 1}`, `{"b": true}`, `{"o": {"x": "y"}}`, `{"l": ["a"]}`, `{"z": null}`, `{"ok": "v", "n": 2}`} {
		req, err := http.NewRequest(http.MethodPut, s.http.URL+"/v2.2/app_instances/pvc-meta/metadata", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Auth-Token", token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var e struct {
			Name   string   `json:"name"`
			Errors []string `json:"errors"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
		resp.Body.Close()
		assert.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode, body)
		assert.Equal(t, datera.NameValidationFailed, e.Name, body)
		assert.Contains(t, strings.Join(e.Errors, ";"), "value must be a string", body)
	}
	md, err := c.GetMetadata(ctx, "pvc-meta")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"keep": "me"}, md, "a rejected PUT sets no key, not even its string ones")

	// A server that answers with a non-string value.
	odd := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/login") {
			fmt.Fprint(w, `{"key":"k","version":"v2.2"}`)
			return
		}
		fmt.Fprint(w, `{"tenant":"/root","path":"/app_instances/x/metadata","version":"v2.2","data":{"n":1}}`)
	}))
	oc, err := datera.New(datera.Config{Endpoint: odd, Username: "u", Password: "p", Retry: fastRetry})
	require.NoError(t, err)
	_, err = oc.GetMetadata(ctx, "pvc-meta")
	require.ErrorIs(t, err, datera.ErrBadResponse)
}

// TestMetadataConcurrentMerges: PUT merges on the server, so writers of different keys never
// lose each other's values.
func TestMetadataConcurrentMerges(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-meta", 1))
	require.NoError(t, err)
	const writers = 16
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.SetMetadata(ctx, "pvc-meta", map[string]string{fmt.Sprintf("k%02d", i): fmt.Sprint(i)})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	md, err := c.GetMetadata(ctx, "pvc-meta")
	require.NoError(t, err)
	assert.Len(t, md, writers)
}

func rawLogin(t *testing.T, base string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"name": fake.DefaultUser, "password": fake.DefaultPassword})
	req, err := http.NewRequest(http.MethodPut, base+"/v2.2/login", bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var lr struct{ Key string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&lr))
	require.NotEmpty(t, lr.Key)
	return lr.Key
}
