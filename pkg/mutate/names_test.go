package mutate

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

func TestClaimNameAndParseOrdinal(t *testing.T) {
	assert.Equal(t, "datadir-cockroachdb-4", ClaimName("datadir", "cockroachdb", 4))
	for _, n := range []int{0, 1, 9, 10, 2147483647} {
		got, ok := ParseOrdinal(ClaimName("data", "web", n), "data", "web")
		assert.True(t, ok)
		assert.Equal(t, n, got)
	}
	for _, bad := range []string{"data-web-", "data-web-01", "data-web--1", "data-web-x", "data-web-1a", "data-other-1", "logs-web-1", "data-web-+1", "data-web-99999999999999999999"} {
		_, ok := ParseOrdinal(bad, "data", "web")
		assert.False(t, ok, bad)
	}
	// Template and StatefulSet names with dashes: the prefix decides, not the dashes.
	n, ok := ParseOrdinal("my-data-my-web-3", "my-data", "my-web")
	assert.True(t, ok)
	assert.Equal(t, 3, n)
}

// TestPVName: the PV name is the shared contract's (pvoptions.PVName), injective: the
// look-alike pair of issue 9 maps to two names.
func TestPVName(t *testing.T) {
	assert.Equal(t, "datera-shop.data-web-0", PVName("shop", "data-web-0"))
	assert.Equal(t, pvoptions.PVName("shop", "data-web-0"), PVName("shop", "data-web-0"))
	assert.NotEqual(t, PVName("team", "a-data-db-0"), PVName("team-a", "data-db-0"))
	assert.Equal(t, LegacyPVName("team", "a-data-db-0"), LegacyPVName("team-a", "data-db-0"), "the version 1 name was not injective")
}

// TestLegacyPVName: the version 1 name, still computed to recognise old PVs.
func TestLegacyPVName(t *testing.T) {
	assert.Equal(t, "datera-shop-data-web-0", LegacyPVName("shop", "data-web-0"))

	// At the limit: kept as is.
	claim := strings.Repeat("c", 253-len("datera-ns-"))
	assert.Equal(t, "datera-ns-"+claim, LegacyPVName("ns", claim))

	// One over: truncated, with a hash of the full name; still valid and deterministic.
	long := claim + "d"
	name := LegacyPVName("ns", long)
	assert.Len(t, name, 253)
	assert.Empty(t, validation.IsDNS1123Subdomain(name))
	assert.Equal(t, name, LegacyPVName("ns", long))
	assert.NotEqual(t, name, LegacyPVName("ns", claim+"e"), "claims differing only past the cut get different PVs")
	assert.NotEqual(t, name, LegacyPVName("nt", long))

	// A cut that lands on "." or "-" does not leave it before the hash.
	dotted := strings.Repeat("a", 253-len("datera-ns-")-11) + ".-.b" + strings.Repeat("c", 10)
	name = LegacyPVName("ns", dotted)
	assert.Empty(t, validation.IsDNS1123Subdomain(name), name)
}

// TestPVClaimIndexFunc: PVs are found by their claimRef, whatever their name.
func TestPVClaimIndexFunc(t *testing.T) {
	keys, err := PVClaimIndexFunc(&corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{Namespace: "shop", Name: "data-web-0"}}})
	require.NoError(t, err)
	assert.Equal(t, []string{"shop/data-web-0"}, keys)
	keys, err = PVClaimIndexFunc(&corev1.PersistentVolume{})
	require.NoError(t, err)
	assert.Empty(t, keys)
	_, err = PVClaimIndexFunc("not a PV")
	assert.Error(t, err)
}

func TestVolumeID(t *testing.T) {
	id, err := VolumeID("pf", "shop", "data-web-0")
	require.NoError(t, err)
	assert.Equal(t, "pf_shop_data-web-0", id)

	id, err = VolumeID("", "shop", "data-web-0")
	require.NoError(t, err)
	assert.Equal(t, "shop_data-web-0", id, "no cluster id")

	id, err = VolumeID("", "1shop", "data-web-0")
	require.NoError(t, err)
	assert.Equal(t, "_1shop_data-web-0", id, "a namespace starting with a digit cannot start a Datera name")

	// Regression: with "-" as the separator these two claims of different namespaces shared
	// one Datera volume ("pf-team-a-data-db-0"), so a claim re-created in namespace "team"
	// could mount the data a Retain PV of namespace "team-a" left behind.
	a, err := VolumeID("pf", "team-a", "data-db-0")
	require.NoError(t, err)
	b, err := VolumeID("pf", "team", "a-data-db-0")
	require.NoError(t, err)
	assert.NotEqual(t, a, b)
	// Same for a digit-led namespace and one that spells the old replacement character.
	a, _ = VolumeID("", "1abc", "x")
	b, _ = VolumeID("", "vabc", "x")
	assert.NotEqual(t, a, b)

	for _, bad := range []string{"1pf", "-pf", "pf/x", strings.Repeat("p", 33), "p f"} {
		_, err := VolumeID(bad, "shop", "data-web-0")
		assert.Error(t, err, bad)
	}
	for _, good := range []string{"p", "_", "Pf.Cluster-01_eu", strings.Repeat("p", 32)} {
		_, err := VolumeID(good, "shop", "data-web-0")
		assert.NoError(t, err, good)
	}

	// Long: 64 characters, valid, deterministic, and distinct past the cut.
	ns, claim := strings.Repeat("n", 63), strings.Repeat("c", 200)+"-0"
	id, err = VolumeID(strings.Repeat("p", 32), ns, claim)
	require.NoError(t, err)
	assert.Len(t, id, 64)
	assert.True(t, pvoptions.ValidName(id))
	id2, _ := VolumeID(strings.Repeat("p", 32), ns, claim)
	assert.Equal(t, id, id2)
	id3, _ := VolumeID(strings.Repeat("p", 32), ns, strings.Repeat("c", 200)+"-1")
	assert.NotEqual(t, id, id3)
	id4, _ := VolumeID(strings.Repeat("p", 31)+"q", ns, claim)
	assert.NotEqual(t, id, id4, "the cluster id is part of the hash too")

	// Characters no Kubernetes name has (mutating admission sees objects before validation):
	// an error, never an invalid ID.
	_, err = VolumeID("pf", "shop", "data:web")
	assert.Error(t, err)
}

// TestNamesProperties: for random valid Kubernetes names of every length, the derived names
// are valid for Kubernetes and Datera, deterministic, and never shared by two claims.
func TestNamesProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 2016))
	label := func(max int, first string) string {
		const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
		n := 1 + r.IntN(max)
		b := []byte{first[r.IntN(len(first))]}
		for len(b) < n {
			c := alnum + "--"
			b = append(b, c[r.IntN(len(c))])
		}
		b[len(b)-1] = alnum[r.IntN(len(alnum))]
		if n == 1 {
			b = b[:1]
		}
		return string(b)
	}
	const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	subdomain := func() string {
		var parts []string
		for l := 0; l < 253; {
			p := label(63, alnum)
			if l+len(p)+1 > 253 {
				break
			}
			parts = append(parts, p)
			l += len(p) + 1
			if r.IntN(3) == 0 {
				break
			}
		}
		return strings.Join(parts, ".")
	}
	seenPV := map[string]string{}
	seenID := map[string]string{}
	for i := range 5000 {
		ns := label(63, alnum)
		claim := subdomain()
		if i%2 == 0 { // StatefulSet-shaped claims too
			claim = ClaimName(label(63, alnum), label(63, alnum), r.IntN(1000))
		}
		require.Empty(t, validation.IsDNS1123Label(ns))
		require.Empty(t, validation.IsDNS1123Subdomain(claim), claim)
		key := ns + "/" + claim

		pv := PVName(ns, claim)
		assert.Empty(t, validation.IsDNS1123Subdomain(pv), "%s → %s", key, pv)
		assert.Equal(t, pv, PVName(ns, claim))
		if other, ok := seenPV[pv]; ok {
			assert.Equal(t, key, other, "PV name %s shared", pv)
		}
		seenPV[pv] = key

		for _, cid := range []string{"", "pf", strings.Repeat("k", 32)} {
			id, err := VolumeID(cid, ns, claim)
			require.NoError(t, err)
			assert.True(t, pvoptions.ValidName(id), "%s → %s", key, id)
			assert.LessOrEqual(t, len(id), 64)
			if other, ok := seenID[cid+"|"+id]; ok {
				assert.Equal(t, key, other, "volume ID %s shared", id)
			}
			seenID[cid+"|"+id] = key
		}

		lv := LabelValue(claim)
		assert.Empty(t, validation.IsValidLabelValue(lv), "%s → %s", claim, lv)
		assert.Equal(t, lv, LabelValue(claim))
	}
}

func TestLabelValue(t *testing.T) {
	assert.Equal(t, "web", LabelValue("web"))
	assert.Equal(t, "", LabelValue(""))
	s63 := strings.Repeat("a", 63)
	assert.Equal(t, s63, LabelValue(s63))
	for _, s := range []string{
		strings.Repeat("a", 64),
		strings.Repeat("a", 51) + "-.b" + strings.Repeat("c", 20), // cut lands on "-."
		strings.Repeat("-", 70),
		"has/slash", "-leading", "trailing.", "ünïcode",
	} {
		v := LabelValue(s)
		assert.Empty(t, validation.IsValidLabelValue(v), "%q → %q", s, v)
		assert.Equal(t, v, LabelValue(s))
		assert.NotEqual(t, v, LabelValue(s+"x"))
	}
}

// TestFastValidators: the loops that replace regexps on the hot path agree with the regexps
// (apimachinery's validators and Datera's pattern).
func TestFastValidators(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const chars = "az09AZ-._/ ~ü"
	volumeID := regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_.-]{2,63}$`)
	clusterID := regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_.-]{0,31}$`)
	check := func(s string) {
		assert.Equal(t, len(validation.IsDNS1123Subdomain(s)) == 0, isDNS1123Subdomain(s), "subdomain %q", s)
		assert.Equal(t, len(validation.IsValidLabelValue(s)) == 0, isLabelValue(s), "label value %q", s)
		assert.Equal(t, volumeID.MatchString(s), pvoptions.ValidName(s), "volume ID %q", s)
		assert.Equal(t, clusterID.MatchString(s), validClusterID(s), "cluster ID %q", s)
	}
	for _, s := range []string{"", "a", "a.b", "a..b", ".a", "a.", "-a", "a-", "a-.b", "A", "a_b", "_ab", "abc",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 253), strings.Repeat("a.", 126) + "a", strings.Repeat("a", 254)} {
		check(s)
	}
	for range 20000 {
		b := make([]byte, r.IntN(70))
		for i := range b {
			b[i] = chars[r.IntN(len(chars))]
		}
		check(string(b))
	}
}

// FuzzNames: the fast validators agree with the regexps on any string; and whatever valid
// Kubernetes names come in, the PV name, volume ID and label values are valid.
func FuzzNames(f *testing.F) {
	f.Add("pf", "shop", "data-web-0")
	f.Add("", "1shop", strings.Repeat("c", 253))
	f.Add(strings.Repeat("k", 32), strings.Repeat("n", 63), strings.Repeat("a.", 126)+"b")
	volumeIDRE := regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_.-]{2,63}$`)
	f.Fuzz(func(t *testing.T, cid, ns, claim string) {
		for _, s := range []string{cid, ns, claim} {
			if (len(validation.IsDNS1123Subdomain(s)) == 0) != isDNS1123Subdomain(s) ||
				(len(validation.IsValidLabelValue(s)) == 0) != isLabelValue(s) || volumeIDRE.MatchString(s) != pvoptions.ValidName(s) {
				t.Fatalf("fast validators disagree with the regexps on %q", s)
			}
		}
		if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(claim)) > 0 {
			return
		}
		pv := PVName(ns, claim)
		if errs := validation.IsDNS1123Subdomain(pv); len(errs) > 0 {
			t.Fatalf("PVName(%q, %q) = %q: %v", ns, claim, pv, errs)
		}
		if v := LabelValue(claim); len(validation.IsValidLabelValue(v)) > 0 {
			t.Fatalf("LabelValue(%q) = %q", claim, v)
		}
		id, err := VolumeID(cid, ns, claim)
		if err != nil {
			if validClusterID(cid) || cid == "" {
				t.Fatalf("VolumeID(%q, %q, %q): %v", cid, ns, claim, err)
			}
			return
		}
		if !pvoptions.ValidName(id) {
			t.Fatalf("VolumeID(%q, %q, %q) = %q", cid, ns, claim, id)
		}
	})
}
