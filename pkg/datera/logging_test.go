package datera_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
)

// keyCatcher records every session key the server hands out.
type keyCatcher struct {
	next http.Handler
	mu   sync.Mutex
	keys []string
}

func (k *keyCatcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/login") {
		k.next.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	k.next.ServeHTTP(rec, r)
	var body struct{ Key string }
	if json.Unmarshal(rec.Body.Bytes(), &body) == nil && body.Key != "" {
		k.mu.Lock()
		k.keys = append(k.keys, body.Key)
		k.mu.Unlock()
	}
	for h, v := range rec.Header() {
		w.Header()[h] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func TestSecretsNeverLogged(t *testing.T) {
	const password = "Zebra_Secret.42"
	s, err := fake.New(fake.Options{Users: map[string]string{"admin": password}})
	require.NoError(t, err)
	catcher := &keyCatcher{next: s}
	url := newHTTPServer(t, catcher)

	var logs syncBuffer
	cfg := datera.Config{Endpoint: url, Username: "admin", Password: password, Retry: fastRetry, Logger: debugLogger(&logs)}
	c, err := datera.New(cfg)
	require.NoError(t, err)
	ctx := context.Background()
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	// A full sequence with an expiry (re-login), a retry storm burst, failures of every kind.
	_, err = c.CreateAppInstance(ctx, vol("pvc-secrets", 1))
	require.NoError(t, err)
	s.ExpireSessions()
	_, err = c.RegisterInitiator(ctx, testIQN, "node-a", true)
	require.NoError(t, err)
	s.SetFault(fake.AllRoutes, fake.Fault{Burst: 3})
	require.NoError(t, c.AddInitiatorToACL(ctx, "pvc-secrets", datera.StorageInstanceName, testIQN))
	_, err = c.SetAdminState(ctx, "pvc-secrets", datera.Online, false)
	require.NoError(t, err)
	_, err = c.Access(ctx, "pvc-secrets")
	require.NoError(t, err)
	_, err = c.GetAppInstance(ctx, "pvc-missing")
	note(err)
	s.SetFault("GET /app_instances/{ai}", fake.Fault{ExpireSessions: 10})
	_, err = c.GetAppInstance(ctx, "pvc-secrets")
	note(err)
	require.NoError(t, c.Login(ctx))
	require.NoError(t, c.DeleteAppInstance(ctx, "pvc-secrets"))

	wrong := cfg
	wrong.Password = "Wrong_Secret.43"
	bad, err := datera.New(wrong)
	require.NoError(t, err)
	_, err = bad.GetAppInstance(ctx, "pvc-secrets")
	note(err)
	logs.Write([]byte(fmt.Sprint(cfg, wrong))) // printing a Config is safe too

	catcher.mu.Lock()
	keys := append([]string(nil), catcher.keys...)
	catcher.mu.Unlock()
	require.GreaterOrEqual(t, len(keys), 3, "several sessions were issued")
	require.Len(t, errs, 3)
	out := logs.String()
	require.Contains(t, out, "datera login", "logins were logged")
	require.Contains(t, out, "retrying", "retries were logged")
	for _, secret := range append(keys, password, wrong.Password) {
		assert.NotContains(t, out, secret)
		for _, err := range errs {
			assert.NotContains(t, err.Error(), secret)
		}
	}
	// Also not in any other encoding a handler might pick.
	assert.False(t, bytes.Contains([]byte(out), []byte(strings.ToLower(password))))
}
