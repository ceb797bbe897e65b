package flex

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

func TestAllowedBackstoresConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []string
		want    []string
		err     string
	}{
		{"host and port", []string{"Datera.Example.com:7718"}, []string{"datera.example.com:7718"}, ""},
		{"ipv6", []string{"[2001:DB8::1]:7718"}, []string{"[2001:db8::1]:7718"}, ""},
		{"leading zero port", []string{"10.0.0.1:07718"}, []string{"10.0.0.1:7718"}, ""},
		{"scheme", []string{"https://x:7718"}, nil, `allowedBackstores[0] "https://x:7718": want host:port (no scheme`},
		{"no port", []string{"x"}, nil, `allowedBackstores[0] "x": want host:port`},
		{"bad port", []string{"ok:7718", "x:99999"}, nil, `allowedBackstores[1] "x:99999": port "99999" is not a number in 1-65535`},
		{"empty host", []string{":7718"}, nil, "the host is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &NodeConfig{NodeName: "n", AllowedBackstores: append([]string(nil), tc.entries...)}
			err := c.complete()
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.AllowedBackstores)
		})
	}
}

func TestAccessCheckCacheTTLConfig(t *testing.T) {
	d := func(v time.Duration) *Duration { x := Duration(v); return &x }
	for _, tc := range []struct {
		ttl  *Duration
		want time.Duration
		err  string
	}{
		{nil, 30 * time.Second, ""},
		{d(0), 0, ""},
		{d(5 * time.Minute), 5 * time.Minute, ""},
		{d(5*time.Minute + time.Second), 0, "accessCheckCacheTTL 5m1s: want 0s (no cache) to 5m0s"},
		{d(-time.Second), 0, "accessCheckCacheTTL -1s"},
	} {
		c := &NodeConfig{NodeName: "n", AccessCheckCacheTTL: tc.ttl}
		err := c.complete()
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tc.want, c.accessCacheTTL())
	}
	var c NodeConfig
	require.NoError(t, json.Unmarshal([]byte(`{"accessCheckCacheTTL":"0s"}`), &c))
	assert.Equal(t, time.Duration(0), c.accessCacheTTL(), `"0s" turns the cache off`)
}

func TestCheckBackstore(t *testing.T) {
	c := &NodeConfig{path: "/etc/petfabric/flex.json", AllowedBackstores: []string{"datera.example.com:7718", "10.0.0.5:7717"}}
	for _, tc := range []struct {
		name, backstore, endpoint string
		insecure                  bool
		err                       []string
	}{
		{"allowed https", "datera.example.com:7718", "https://datera.example.com:7718", false, nil},
		{"host case does not matter", "DATERA.example.com", "https://DATERA.example.com:7718", false, nil},
		{"allowed http with opt-in", "10.0.0.5:7717", "http://10.0.0.5:7717", true, nil},
		{"http without opt-in", "10.0.0.5:7717", "http://10.0.0.5:7717", false, []string{"allowInsecureHTTP is false", "http://10.0.0.5:7717"}},
		{"other host", "evil.example.com:7718", "https://evil.example.com:7718", false,
			[]string{`option backstoreServer "evil.example.com:7718" resolves to evil.example.com:7718, which is not in this node's allowedBackstores (datera.example.com:7718, 10.0.0.5:7717)`}},
		{"same host other port", "https://datera.example.com", "https://datera.example.com", false, []string{"datera.example.com:443"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.AllowInsecureHTTP = tc.insecure
			err := c.checkBackstore(tc.backstore, tc.endpoint)
			if tc.err == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, m := range tc.err {
				assert.Contains(t, err.Error(), m)
			}
		})
	}
	empty := &NodeConfig{path: "/etc/petfabric/flex.json"}
	err := empty.checkBackstore("x:7718", "https://x:7718")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "allowedBackstores is empty, so it may talk to no backstore")
	assert.Contains(t, err.Error(), "/etc/petfabric/flex.json")
}

func TestContractV2Options(t *testing.T) {
	base := map[string]string{"volumeID": "pv-1", "size": "1", "backstoreServer": "10.0.0.5:7718"}
	parse := func(kv ...string) (*MountRequest, error) {
		o := map[string]string{}
		for k, v := range base {
			o[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			o[kv[i]] = kv[i+1]
		}
		b, _ := json.Marshal(o)
		return ParseMountRequest("/pods/p/vol", string(b), "xfs")
	}
	r, err := parse()
	require.NoError(t, err)
	assert.Equal(t, pvoptions.AccessReadWriteOnce, r.AccessMode, "absent means ReadWriteOnce (contract v1)")
	assert.False(t, r.HasOwner)
	assert.Empty(t, r.Ignored)

	r, err = parse("accessMode", "ReadOnlyMany", "kubernetes.io/readwrite", "rw")
	require.NoError(t, err)
	assert.True(t, r.ReadOnly, "ReadOnlyMany is always mounted read-only")
	assert.True(t, r.AskedRW)

	_, err = parse("accessMode", "ReadWriteMany")
	require.ErrorContains(t, err, `option accessMode "ReadWriteMany": want ReadWriteOnce or ReadOnlyMany`)

	r, err = parse("clusterID", "k1", "claimNamespace", "ns", "claimName", "data-0", "namespaceUID", "u1")
	require.NoError(t, err)
	assert.True(t, r.HasOwner)
	assert.Equal(t, pvoptions.Owner{ClusterID: "k1", Namespace: "ns", Claim: "data-0", NamespaceUID: "u1"}, r.Owner)
	assert.Empty(t, r.Ignored, "contract-v2 options are known")

	_, err = parse("claimNamespace", "ns", "claimName", "data-0")
	require.ErrorContains(t, err, "options claimNamespace, claimName and namespaceUID come together")
}

func TestCredentialsFileServesOnlyPetfabricPVs(t *testing.T) {
	owner := pvoptions.Owner{ClusterID: "k1", Namespace: "ns", Claim: "data-db-0", NamespaceUID: "u1"}
	for _, tc := range []struct {
		name, pvName string
		hasOwner     bool
		err          string
	}{
		{"petfabric PV", pvoptions.PVName("ns", "data-db-0"), true, ""},
		{"inline volume", "data", false, `volume "data" is not one (it has no claimNamespace/claimName options)`},
		{"inline volume with owner options", "data", true, `petfabric names the PV of claim ns/data-db-0 "datera-ns.data-db-0"`},
		{"v1 PV name", "datera-ns-data-db-0", true, "is not one"},
		{"PV of another claim", pvoptions.PVName("ns", "data-db-1"), true, "is not one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := credentialsFileServes(&MountRequest{PVName: tc.pvName, Owner: owner, HasOwner: tc.hasOwner})
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, "the node's credentials file serves only petfabric PersistentVolumes")
			assert.Contains(t, err.Error(), tc.err)
		})
	}
}

func TestAccessCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", accessCacheDir)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	c := accessCache{dir: dir, ttl: 30 * time.Second, now: func() time.Time { return now }}
	p := DateraParams{Endpoint: "https://d:7718", Tenant: "/root", Username: "alice", Password: "Pw_Secret.123"}
	name, err := c.entry(p, "pv-1")
	require.NoError(t, err)
	assert.Regexp(t, `^[0-9a-f]{64}$`, name)

	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm(), "root-only directory")
	st, err = os.Stat(filepath.Join(dir, accessKeyFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "root-only key")

	// Every field of the tuple matters; the same tuple gives the same name.
	again, _ := c.entry(p, "pv-1")
	assert.Equal(t, name, again)
	for _, q := range []DateraParams{
		{Endpoint: "https://e:7718", Tenant: p.Tenant, Username: p.Username, Password: p.Password},
		{Endpoint: p.Endpoint, Tenant: "/root/t", Username: p.Username, Password: p.Password},
		{Endpoint: p.Endpoint, Tenant: p.Tenant, Username: "bob", Password: p.Password},
		{Endpoint: p.Endpoint, Tenant: p.Tenant, Username: p.Username, Password: "Pw_Secret.124"},
		{Endpoint: p.Endpoint, Tenant: p.Tenant, Username: "alic", Password: "e" + p.Password}, // shifted boundary
	} {
		other, _ := c.entry(q, "pv-1")
		assert.NotEqual(t, name, other, "%+v", q)
	}
	other, _ := c.entry(p, "pv-2")
	assert.NotEqual(t, name, other)

	assert.False(t, c.hit(name), "empty cache")
	require.NoError(t, c.store(name))
	assert.True(t, c.hit(name))
	now = now.Add(29 * time.Second)
	assert.True(t, c.hit(name))
	now = now.Add(time.Second)
	assert.False(t, c.hit(name), "expired after the TTL")
	now = now.Add(-time.Hour)
	assert.False(t, c.hit(name), "a clock that went back is no hit")

	// No file under the cache holds the password or its base64.
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		assert.NotContains(t, string(b), p.Password)
		assert.NotContains(t, f, p.Password)
	}

	// A new key (lost or corrupted) invalidates every entry.
	now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	require.NoError(t, c.store(name))
	require.NoError(t, os.WriteFile(filepath.Join(dir, accessKeyFile), []byte("short"), 0o600))
	renamed, err := c.entry(p, "pv-1")
	require.NoError(t, err)
	assert.NotEqual(t, name, renamed)
	assert.False(t, c.hit(renamed))

	// TTL 0: no key, no entries.
	off := accessCache{dir: filepath.Join(t.TempDir(), "off"), ttl: 0, now: time.Now}
	n, err := off.entry(p, "pv-1")
	require.NoError(t, err)
	assert.Empty(t, n)
	require.NoError(t, off.store(n))
	assert.False(t, off.hit(n))
	_, err = os.Stat(off.dir)
	assert.True(t, os.IsNotExist(err))
}

func TestAccessCacheKeyIsAgreedUnderConcurrency(t *testing.T) {
	dir := filepath.Join(t.TempDir(), accessCacheDir)
	const n = 16
	keys := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := accessCache{dir: dir, ttl: time.Minute}.key()
			assert.NoError(t, err)
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys {
		assert.Equal(t, keys[0], k)
	}
	assert.Len(t, keys[0], accessKeyBytes)
}

// scriptedACL is a DateraAPI whose ACL reads follow a script; it records removals.
type scriptedACL struct {
	DateraAPI
	mu      sync.Mutex
	reads   []*datera.ACLPolicy
	removed []string
}

func (s *scriptedACL) GetACL(context.Context, string, string) (*datera.ACLPolicy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reads) == 0 {
		return nil, errors.New("script ended")
	}
	p := s.reads[0]
	if len(s.reads) > 1 {
		s.reads = s.reads[1:]
	}
	return p, nil
}

func (s *scriptedACL) RemoveInitiatorFromACL(_ context.Context, _, _, iqn string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed = append(s.removed, iqn)
	return nil
}

func acl(entries ...datera.PathRef) *datera.ACLPolicy { return &datera.ACLPolicy{Initiators: entries} }

func ini(iqn, name string) datera.PathRef {
	return datera.PathRef{Path: "/initiators/" + iqn, ID: iqn, Name: name}
}

func TestFenceVerify(t *testing.T) {
	const (
		small = "iqn.1993-08.org.debian:01:aaa"
		self  = "iqn.1993-08.org.debian:01:mmm"
		large = "iqn.1993-08.org.debian:01:zzz"
	)
	d := &Driver{Config: &NodeConfig{RWOSettleTimeout: Duration(300 * time.Millisecond)}, Log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		name        string
		reads       []*datera.ACLPolicy
		added       bool
		err         string
		removed     []string
		minDuration time.Duration
	}{
		{"alone: wins", []*datera.ACLPolicy{acl(ini(self, "petfabric-me"))}, true, "", nil, 0},
		{"a smaller IQN raced in: yields at once and withdraws", []*datera.ACLPolicy{acl(ini(self, ""), ini(small, "petfabric-node-a"))},
			true, `in use by initiator ` + small + ` (node "node-a")`, []string{self}, 0},
		{"yields but did not add: leaves the entry", []*datera.ACLPolicy{acl(ini(self, ""), ini(small, ""))},
			false, "in use by initiator " + small, nil, 0},
		{"a larger IQN withdraws: wins after waiting", []*datera.ACLPolicy{acl(ini(self, ""), ini(large, "")), acl(ini(self, ""), ini(large, "")), acl(ini(self, ""))},
			true, "", nil, 2 * rwoPoll},
		{"a larger IQN that stays (a holder): yields after the settle timeout", []*datera.ACLPolicy{acl(ini(self, ""), ini(large, "custom-name"))},
			true, `in use by initiator ` + large + ` (registered as "custom-name")`, []string{self}, 300 * time.Millisecond},
		{"an initiator group: yields", []*datera.ACLPolicy{{Initiators: []datera.PathRef{ini(self, "")}, InitiatorGroups: []datera.PathRef{{Path: "/initiator_groups/g1"}}}},
			true, "initiator group /initiator_groups/g1", []string{self}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &scriptedACL{reads: tc.reads}
			start := time.Now()
			err := d.fenceVerify(context.Background(), d.Log, api, "pv-1", "storage-1", self, tc.added)
			if tc.err == "" {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				assert.Contains(t, err.Error(), "volume pv-1 is ReadWriteOnce")
				assert.Contains(t, err.Error(), "unmounts it or is fenced")
			}
			assert.Equal(t, tc.removed, api.removed, "only this node's own entry, only when this call added it")
			assert.GreaterOrEqual(t, time.Since(start), tc.minDuration)
		})
	}
}

func TestFenceCheck(t *testing.T) {
	const self = "iqn.1993-08.org.debian:01:mmm"
	for _, tc := range []struct {
		name    string
		acl     *datera.ACLPolicy
		willAdd bool
		err     string
	}{
		{"empty", acl(), true, ""},
		{"only this node (an interrupted earlier call)", acl(ini(self, "")), false, ""},
		{"another node", acl(ini("iqn.1993-08.org.debian:01:zzz", "petfabric-node-z")), false, `initiator iqn.1993-08.org.debian:01:zzz (node "node-z")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &scriptedACL{reads: []*datera.ACLPolicy{tc.acl}}
			willAdd, err := fenceCheck(context.Background(), api, "pv-1", "storage-1", self)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				assert.Empty(t, api.removed)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.willAdd, willAdd)
		})
	}
	_, err := fenceCheck(context.Background(), &scriptedACL{}, "pv-1", "storage-1", self)
	require.ErrorContains(t, err, "reading the volume's ACL")
	assert.False(t, strings.Contains(err.Error(), "in use"))
}
