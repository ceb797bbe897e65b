package mutate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// The option keys (pvoptions.OptReplica, pvoptions.OptFSType, pvoptions.OptTemplate, …) and their allowed values
// are the PV contract's, in pkg/pvoptions. Each may be set as a StorageClass parameter, as a
// claim-template annotation "petfabric.io/<key>" (which wins), or as a webhook default — except
// the admin-only keys (adminOnlyKeys), which only the class or the webhook may set. Values are
// strings because FlexVolume options are map[string]string. pvoptions.OptSize is accepted for
// old manifests only when it is at most the claim's request, and never changes the size: a
// volume is as large as its claim's request (what ResourceQuota counts), no larger.

// Secret of type datera/iscsi with the Datera credentials (class parameters or defaults); not
// PV options: the PV names it in spec.flexVolume.secretRef.
const (
	OptSecretName      = "secretName"
	OptSecretNamespace = "secretNamespace"
)

// Class-only parameters that widen what a template annotation may choose. Each is a
// comma-separated list; a template may ask for the class's own value or one on the list, and
// for nothing else. Without the parameter the class's value (if any) is the only one.
const (
	ClassParamAllowedTemplates      = "allowedTemplates"
	ClassParamAllowedIPPools        = "allowedIPPools"
	ClassParamAllowedPlacementModes = "allowedPlacementModes"
)

// allowedListParam is the class parameter listing the extra values of a choice option.
var allowedListParam = map[string]string{
	pvoptions.OptTemplate:      ClassParamAllowedTemplates,
	pvoptions.OptIPPool:        ClassParamAllowedIPPools,
	pvoptions.OptPlacementMode: ClassParamAllowedPlacementModes,
}

// ClassParamBackstore is the design's StorageClass parameter name for the Datera management
// endpoint; it is accepted as an alias of backstoreServer (the PV option's name).
const ClassParamBackstore = "backstore"

// withBackstoreAlias returns the class parameters with "backstore" read as backstoreServer
// when the latter is not set (the map is copied only then).
func withBackstoreAlias(params map[string]string) map[string]string {
	alias := params[ClassParamBackstore]
	if alias == "" || params[pvoptions.OptBackstoreServer] != "" {
		return params
	}
	out := make(map[string]string, len(params))
	for k, v := range params {
		out[k] = v
	}
	out[pvoptions.OptBackstoreServer] = alias
	return out
}

// annotationKey maps each option key to its template annotation, built once.
var annotationKey = func() map[string]string {
	m := make(map[string]string, len(optionKeys))
	for _, k := range optionKeys {
		m[k] = AnnotationPrefix + k
	}
	return m
}()

// optionKeys are every key a user may set, in a stable order.
var optionKeys = []string{
	pvoptions.OptReplica, pvoptions.OptFSType, pvoptions.OptSize, pvoptions.OptTemplate, pvoptions.OptPlacementMode, pvoptions.OptMaxIOPS, pvoptions.OptMaxBW,
	pvoptions.OptIPPool, pvoptions.OptTenant, pvoptions.OptBackstoreServer, OptSecretName, OptSecretNamespace,
}

// adminOnlyKeys say where the Datera credentials go and which credentials and tenant are
// used: the flex driver and the reconcile loop log in to backstoreServer with the Secret's
// username and password. A user who could set them on a claim (template) could send the
// administrator's credentials to a server of their choosing, or use another namespace's
// Secret; so an annotation setting one is refused, and Apply never records them.
var adminOnlyKeys = []string{pvoptions.OptBackstoreServer, OptSecretName, OptSecretNamespace, pvoptions.OptTenant}

// AdminOnly reports whether an option key may be set only by the StorageClass or the webhook.
func AdminOnly(key string) bool { return slices.Contains(adminOnlyKeys, key) }

// Options are the resolved, validated settings of one claim template.
type Options struct {
	Replica         int
	FSType          string
	Template        string
	PlacementMode   string
	MaxIOPS         int64
	MaxBW           int64 // KiB/s
	IPPool          string
	Tenant          string
	BackstoreServer string
	SecretName      string
	SecretNamespace string

	raw map[string]string // the resolved string values, for annotations and PV options
}

// ValidationError names the offending field and what is allowed.
type ValidationError struct {
	Field   string // e.g. spec.volumeClaimTemplates[0].metadata.annotations[petfabric.io/replica]
	Value   string
	Allowed string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%s: invalid value %q: %s", e.Field, e.Value, e.Allowed)
}

// resolveOptions merges annotations > class parameters > defaults and validates the result,
// including that no annotation asks for more than the admin grants (capByGrant) and that no
// size exceeds the claim's request (requestGiB). classField and annField name the class and
// the template's annotations in errors.
func resolveOptions(annotations, classParams, defaults map[string]string, classField, annField string, requestGiB int64) (Options, error) {
	declared := classParams
	classParams = withBackstoreAlias(classParams)
	raw := make(map[string]string, len(optionKeys))
	for _, k := range optionKeys {
		ann := annotations[annotationKey[k]]
		if AdminOnly(k) && ann != "" {
			return Options{}, &ValidationError{Field: fmt.Sprintf("%s[%s]", annField, annotationKey[k]), Value: ann,
				Allowed: "no such annotation: " + k + " is set only by the StorageClass parameters or the webhook configuration"}
		}
		switch {
		case ann != "":
			raw[k] = ann
		case classParams[k] != "":
			raw[k] = classParams[k]
		case defaults[k] != "":
			raw[k] = defaults[k]
		}
	}
	o := Options{raw: raw}
	// bad names where the offending value came from, by the same precedence; built only on
	// failure, since admission of a valid template is the hot path.
	bad := func(k, allowed string) error {
		f := k
		switch {
		case annotations[annotationKey[k]] != "":
			f = fmt.Sprintf("%s[%s]", annField, annotationKey[k])
		case k == pvoptions.OptBackstoreServer && declared[k] == "" && declared[ClassParamBackstore] != "":
			f = fmt.Sprintf("%s.parameters[%s]", classField, ClassParamBackstore)
		case classParams[k] != "":
			f = fmt.Sprintf("%s.parameters[%s]", classField, k)
		case defaults[k] != "":
			f = "webhook default " + k
		}
		return &ValidationError{Field: f, Value: raw[k], Allowed: allowed}
	}
	var err error
	if o.Replica, err = pvoptions.ParseReplica(raw[pvoptions.OptReplica]); err != nil {
		return o, bad(pvoptions.OptReplica, fmt.Sprintf("an integer replica count from %d to %d", datera.MinReplicaCount, datera.MaxReplicaCount))
	}
	if _, set := raw[pvoptions.OptReplica]; !set {
		o.Replica = defaultReplica
	}
	o.FSType = or(raw[pvoptions.OptFSType], "xfs")
	if !pvoptions.ValidFSType(o.FSType) {
		return o, bad(pvoptions.OptFSType, "one of "+strings.Join(pvoptions.FSTypes(), ", "))
	}
	if v, ok := raw[pvoptions.OptSize]; ok {
		n, err := pvoptions.ParseSize(v)
		if err != nil || n > requestGiB {
			return o, bad(pvoptions.OptSize, fmt.Sprintf("a whole number of GiB from %d to the claim's storage request (%d GiB): the volume size is the request, "+
				"which is what ResourceQuota counts; raise spec.resources.requests.storage instead, or drop %s%s", datera.MinSizeGiB, requestGiB, AnnotationPrefix, pvoptions.OptSize))
		}
	}
	if o.Template, err = pvoptions.ParseTemplate(raw[pvoptions.OptTemplate]); err != nil {
		return o, bad(pvoptions.OptTemplate, "a Datera app_template name (3-64 characters of [a-zA-Z0-9_.-], starting with a letter or _)")
	}
	if o.PlacementMode, err = pvoptions.ParsePlacementMode(raw[pvoptions.OptPlacementMode]); err != nil {
		return o, bad(pvoptions.OptPlacementMode, "one of "+strings.Join(pvoptions.PlacementModes(), ", "))
	}
	if o.MaxIOPS, err = pvoptions.ParseMaxIOPS(raw[pvoptions.OptMaxIOPS]); err != nil {
		return o, bad(pvoptions.OptMaxIOPS, fmt.Sprintf("a whole number from 0 to %d (0 = unlimited)", datera.MaxIOPS))
	}
	if o.MaxBW, err = pvoptions.ParseMaxBW(raw[pvoptions.OptMaxBW]); err != nil {
		return o, bad(pvoptions.OptMaxBW, fmt.Sprintf("a whole number of KiB/s from 0 to %d (0 = unlimited)", datera.MaxBandwidthKiB))
	}
	if o.IPPool, err = pvoptions.ParseIPPool(raw[pvoptions.OptIPPool]); err != nil {
		return o, bad(pvoptions.OptIPPool, "a Datera ip_pool name")
	}
	if o.Tenant = raw[pvoptions.OptTenant]; o.Tenant != "" && !pvoptions.ValidTenant(o.Tenant) {
		return o, bad(pvoptions.OptTenant, "a Datera tenant: /root or /root/<name>")
	}
	o.BackstoreServer = raw[pvoptions.OptBackstoreServer]
	if o.BackstoreServer == "" {
		return o, &ValidationError{Field: classField + ".parameters[backstoreServer]", Value: "", Allowed: "the host:port of the Datera management API must be set by the class or the webhook"}
	}
	if !pvoptions.ValidBackstoreServer(o.BackstoreServer) {
		return o, bad(pvoptions.OptBackstoreServer, fmt.Sprintf("host:port of the Datera management API, port %d (https) or %d (http)", datera.HTTPSPort, datera.HTTPPort))
	}
	o.SecretName, o.SecretNamespace = raw[OptSecretName], raw[OptSecretNamespace]
	if o.SecretName == "" || o.SecretNamespace == "" {
		return o, &ValidationError{Field: classField + ".parameters[secretName, secretNamespace]", Value: o.SecretNamespace + "/" + o.SecretName,
			Allowed: "the Datera credentials Secret must be named by the class or the webhook"}
	}
	if err := capByGrant(o, annotations, classParams, defaults, classField, bad); err != nil {
		return o, err
	}
	return o, nil
}

// capByGrant checks the options a template annotation set against what the admin grants: the
// class parameter, else the webhook default. A user may lower replica, maxIops and maxBW
// (0 = unlimited counts as more than any limit) but not raise them above a grant, and may pick
// template, ipPool and placementMode only from the class's own value and its allowed* list —
// these select Datera-side resources (an app_template can carry any size and policy; an ip
// pool is a network, possibly another tenant's; all_flash costs more than hybrid). fsType is
// free: the filesystem is the user's own and the choice is from a fixed safe set.
func capByGrant(o Options, annotations, classParams, defaults map[string]string, classField string, bad func(k, allowed string) error) error {
	grant := func(k string) (value, source string, ok bool) {
		if v := classParams[k]; v != "" {
			return v, fmt.Sprintf("%s.parameters[%s]", classField, k), true
		}
		if v := defaults[k]; v != "" {
			return v, "webhook default " + k, true
		}
		return "", "", false
	}
	userSet := func(k string) bool { return annotations[annotationKey[k]] != "" }

	if userSet(pvoptions.OptReplica) {
		if g, src, ok := grant(pvoptions.OptReplica); ok {
			n, err := strconv.Atoi(g)
			if err != nil {
				return &ValidationError{Field: src, Value: g, Allowed: "an integer replica count"}
			}
			if o.Replica > n {
				return bad(pvoptions.OptReplica, fmt.Sprintf("at most %d, the replica count %s grants", n, src))
			}
		}
	}
	for _, k := range []string{pvoptions.OptMaxIOPS, pvoptions.OptMaxBW} {
		if !userSet(k) {
			continue
		}
		g, src, ok := grant(k)
		if !ok {
			continue
		}
		limit, err := strconv.ParseInt(g, 10, 64)
		if err != nil || limit < 0 {
			return &ValidationError{Field: src, Value: g, Allowed: "a whole number (0 = unlimited)"}
		}
		v := o.MaxIOPS
		if k == pvoptions.OptMaxBW {
			v = o.MaxBW
		}
		if limit > 0 && (v == 0 || v > limit) {
			return bad(k, fmt.Sprintf("from 1 to %d, the limit %s grants (0 would be unlimited)", limit, src))
		}
	}
	for _, k := range []string{pvoptions.OptTemplate, pvoptions.OptIPPool, pvoptions.OptPlacementMode} {
		if !userSet(k) {
			continue
		}
		want := annotations[annotationKey[k]]
		var allowed []string
		if g, _, ok := grant(k); ok {
			allowed = append(allowed, g)
		}
		for _, v := range strings.Split(classParams[allowedListParam[k]], ",") {
			if v = strings.TrimSpace(v); v != "" && !slices.Contains(allowed, v) {
				allowed = append(allowed, v)
			}
		}
		if slices.Contains(allowed, want) {
			continue
		}
		if len(allowed) == 0 {
			return bad(k, fmt.Sprintf("nothing: %s allows no %s choice (an admin lists the allowed values in the class parameter %s)", classField, k, allowedListParam[k]))
		}
		return bad(k, fmt.Sprintf("one of %s (what %s allows; an admin lists more in the class parameter %s)", strings.Join(allowed, ", "), classField, allowedListParam[k]))
	}
	return nil
}

// Raw returns the resolved option strings.
func (o Options) Raw() map[string]string { return o.raw }

// defaultReplica is the replica count when neither template, class nor webhook sets one.
const defaultReplica = 3

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
