package chart

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/pkg/webhook"
	"github.com/petfabric/petfabric/test/helmchart"
)

const (
	ns           = helmchart.Namespace
	webhookName  = "petfabric-webhook"
	webhookCert  = "petfabric-webhook-tls"
	extenderName = "petfabric-extender"
	extenderCert = "petfabric-extender-tls"
	mwcName      = "petfabric"
)

// ciFile is the path of ci/<name>-values.yaml.
func ciFile(name string) string {
	return filepath.Join(helmchart.ChartDir(), "ci", name+"-values.yaml")
}

// renders caches manifests by ci file and values: many tests look at the same rendering.
var renders sync.Map

// render renders with ci/<name>-values.yaml (name "" for the chart's defaults) plus values
// (applied after the ci file), and decodes the objects afresh for the caller.
func render(t *testing.T, name, values string) []*unstructured.Unstructured {
	t.Helper()
	key := name + "\x00" + values
	if out, ok := renders.Load(key); ok {
		return helmchart.Objects(t, out.(string))
	}
	var args []string
	if name != "" {
		args = []string{"--values", ciFile(name)}
	}
	out, err := helmchart.Template(t, values, args...)
	require.NoError(t, err)
	renders.Store(key, out)
	return helmchart.Objects(t, out)
}

// decode converts the object of kind and name into into, failing the test when it is absent.
func decode(t *testing.T, objs []*unstructured.Unstructured, kind, name string, into any) {
	t.Helper()
	o := helmchart.Find(objs, kind, name)
	require.NotNil(t, o, "%s %s not rendered", kind, name)
	require.NoError(t, helmchart.Decode(o, into))
}

// typed are the API types of the built-in kinds the chart renders: every such object must
// decode into its type with no unknown field.
var typed = map[string]func() any{
	"Deployment":                       func() any { return &appsv1.Deployment{} },
	"DaemonSet":                        func() any { return &appsv1.DaemonSet{} },
	"Service":                          func() any { return &corev1.Service{} },
	"ServiceAccount":                   func() any { return &corev1.ServiceAccount{} },
	"Secret":                           func() any { return &corev1.Secret{} },
	"ConfigMap":                        func() any { return &corev1.ConfigMap{} },
	"PodDisruptionBudget":              func() any { return &policyv1.PodDisruptionBudget{} },
	"MutatingWebhookConfiguration":     func() any { return &admissionregistrationv1.MutatingWebhookConfiguration{} },
	"ValidatingAdmissionPolicy":        func() any { return &admissionregistrationv1.ValidatingAdmissionPolicy{} },
	"ValidatingAdmissionPolicyBinding": func() any { return &admissionregistrationv1.ValidatingAdmissionPolicyBinding{} },
	"ClusterRole":                      func() any { return &rbacv1.ClusterRole{} },
	"ClusterRoleBinding":               func() any { return &rbacv1.ClusterRoleBinding{} },
	"Role":                             func() any { return &rbacv1.Role{} },
	"RoleBinding":                      func() any { return &rbacv1.RoleBinding{} },
	"StorageClass":                     func() any { return &storagev1.StorageClass{} },
	"NetworkPolicy":                    func() any { return &networkingv1.NetworkPolicy{} },
}

// crdKinds are the kinds of installed CRDs the chart may render.
var crdKinds = map[string]string{
	"Issuer":         "cert-manager.io/v1",
	"Certificate":    "cert-manager.io/v1",
	"ServiceMonitor": "monitoring.coreos.com/v1",
}

// TestEveryCIValuesRendersKnownKinds: every ci/*-values.yaml renders; every object is of a
// kind the test knows and decodes strictly into its API type, namespaced objects land in the
// release namespace, and no volume is mounted with subPath (a subPath mount never sees a
// renewed certificate or changed configuration).
func TestEveryCIValuesRendersKnownKinds(t *testing.T) {
	files := ciValues(t)
	require.GreaterOrEqual(t, len(files), 5, "ci/*-values.yaml")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			objs := helmchart.Objects(t, helmchart.Render(t, "", "--values", f))
			require.NotEmpty(t, objs)
			for _, o := range objs {
				id := o.GetKind() + " " + o.GetName()
				if gv, ok := crdKinds[o.GetKind()]; ok {
					assert.Equal(t, gv, o.GetAPIVersion(), id)
				} else {
					mk, ok := typed[o.GetKind()]
					require.True(t, ok, "unexpected kind: %s", id)
					assert.NoError(t, helmchart.Decode(o, mk()), id)
				}
				switch {
				case o.GetNamespace() == "":
				case o.GetName() == "petfabric-petfabric-scheduler-auth-reader":
					// the secondary scheduler's binding to the authentication reader Role
					// lives where that Role is
					assert.Equal(t, "kube-system", o.GetNamespace(), id)
				case o.GetName() == "petfabric-dashboard":
					// where Grafana's sidecar looks (metrics.dashboard.namespace)
				default:
					assert.Equal(t, ns, o.GetNamespace(), id)
				}
				assert.NotContains(t, fmt.Sprint(o.Object), "subPath", id)
			}
		})
	}
}

// hooks returns the webhooks of the rendered configuration by name.
func hooks(t *testing.T, objs []*unstructured.Unstructured) (*admissionregistrationv1.MutatingWebhookConfiguration, map[string]admissionregistrationv1.MutatingWebhook) {
	t.Helper()
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	decode(t, objs, "MutatingWebhookConfiguration", mwcName, &mwc)
	out := map[string]admissionregistrationv1.MutatingWebhook{}
	for _, h := range mwc.Webhooks {
		out[h.Name] = h
	}
	return &mwc, out
}

// hookPaths are the server's paths (pkg/webhook) of each hook, with the resource it matches.
var hookPaths = map[string]struct{ path, group, resource string }{
	"statefulsets.petfabric.io": {webhook.PathStatefulSets, "apps", "statefulsets"},
	"scale.petfabric.io":        {webhook.PathScale, "apps", "statefulsets/scale"},
	"claims.petfabric.io":       {webhook.PathClaims, "", "persistentvolumeclaims"},
	"pods.petfabric.io":         {webhook.PathPods, "", "pods"},
}

// TestWebhookHooks: the three hooks call the webhook server's own paths with the decided
// policies, selectors and conditions, for the default values and the variants of each value.
func TestWebhookHooks(t *testing.T) {
	for _, tc := range []struct {
		name, ci, values  string
		failure           admissionregistrationv1.FailurePolicyType
		reinvocation      admissionregistrationv1.ReinvocationPolicyType
		timeout           int32
		excluded          []string
		url               string
		caBundle, injects bool
	}{
		{name: "defaults", ci: "default", failure: admissionregistrationv1.Fail, reinvocation: admissionregistrationv1.IfNeededReinvocationPolicy,
			timeout: 10, excluded: []string{"kube-system", ns, "kube-public"}, injects: true},
		{name: "ignore, never, 5s, more namespaces", ci: "default",
			values:  "webhook:\n  failurePolicy: Ignore\n  reinvocationPolicy: Never\n  timeoutSeconds: 5\n  excludeNamespaces: [ops]\n",
			failure: admissionregistrationv1.Ignore, reinvocation: admissionregistrationv1.NeverReinvocationPolicy,
			timeout: 5, excluded: []string{"kube-system", ns, "ops"}, injects: true},
		{name: "url mode", ci: "url-mode", failure: admissionregistrationv1.Fail, reinvocation: admissionregistrationv1.IfNeededReinvocationPolicy,
			timeout: 10, excluded: []string{"kube-system", ns}, url: "https://10.0.0.5:8443", caBundle: true},
		{name: "provided caBundle", ci: "provided-cabundle", failure: admissionregistrationv1.Fail, reinvocation: admissionregistrationv1.IfNeededReinvocationPolicy,
			timeout: 10, excluded: []string{"kube-system", ns}, caBundle: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, tc.ci, tc.values)
			mwc, byName := hooks(t, objs)
			require.Len(t, mwc.Webhooks, len(hookPaths), "with the scheduling gate's pod hook")
			if tc.injects {
				ref := mwc.Annotations["cert-manager.io/inject-ca-from"]
				assert.Equal(t, ns+"/"+webhookCert, ref, "inject-ca-from is <namespace>/<serving Certificate>")
				assert.NotNil(t, helmchart.Find(objs, "Certificate", webhookCert), "the Certificate inject-ca-from names")
			} else {
				assert.NotContains(t, mwc.Annotations, "cert-manager.io/inject-ca-from")
			}
			for name, want := range hookPaths {
				h, ok := byName[name]
				require.True(t, ok, "hook %s", name)
				cc := h.ClientConfig
				if tc.url != "" {
					require.NotNil(t, cc.URL, name)
					assert.Equal(t, tc.url+want.path, *cc.URL, name)
					assert.Nil(t, cc.Service, name)
				} else {
					require.NotNil(t, cc.Service, name)
					assert.Equal(t, webhookName, cc.Service.Name, name)
					assert.Equal(t, ns, cc.Service.Namespace, name)
					assert.Equal(t, want.path, *cc.Service.Path, name)
				}
				if tc.caBundle {
					assert.Contains(t, string(cc.CABundle), "BEGIN CERTIFICATE", name)
				} else {
					assert.Empty(t, cc.CABundle, name)
				}
				require.Len(t, h.Rules, 1, name)
				assert.Equal(t, []string{want.group}, h.Rules[0].APIGroups, name)
				assert.Equal(t, []string{want.resource}, h.Rules[0].Resources, name)
				if name == "pods.petfabric.io" {
					assert.Equal(t, admissionregistrationv1.Ignore, *h.FailurePolicy, "the scheduling gate never blocks a pod")
				} else {
					assert.Equal(t, tc.failure, *h.FailurePolicy, name)
				}
				assert.Equal(t, admissionregistrationv1.SideEffectClassNoneOnDryRun, *h.SideEffects, name)
				assert.Equal(t, tc.timeout, *h.TimeoutSeconds, name)
				assert.Equal(t, admissionregistrationv1.Equivalent, *h.MatchPolicy, name)
				assert.Equal(t, []string{"v1"}, h.AdmissionReviewVersions, name)
				if name == "statefulsets.petfabric.io" {
					assert.Equal(t, tc.reinvocation, *h.ReinvocationPolicy, name)
				} else {
					assert.Equal(t, admissionregistrationv1.NeverReinvocationPolicy, *h.ReinvocationPolicy, "%s never patches", name)
				}
				nsSel, err := metav1.LabelSelectorAsSelector(h.NamespaceSelector)
				require.NoError(t, err, name)
				for _, ex := range tc.excluded {
					assert.False(t, nsSel.Matches(labels.Set{"kubernetes.io/metadata.name": ex}), "%s: namespace %s must be excluded", name, ex)
				}
				assert.True(t, nsSel.Matches(labels.Set{"kubernetes.io/metadata.name": "tenant"}), name)
				assert.False(t, nsSel.Matches(labels.Set{"kubernetes.io/metadata.name": "tenant", "petfabric.io/webhook": "disabled"}), "%s: namespace opt-out", name)
				objSel, err := metav1.LabelSelectorAsSelector(h.ObjectSelector)
				require.NoError(t, err, name)
				assert.True(t, objSel.Matches(labels.Set{"app": "db"}), name)
				assert.False(t, objSel.Matches(labels.Set{"petfabric.io/webhook": "disabled"}), "%s: object opt-out", name)
			}
			assert.Len(t, byName["statefulsets.petfabric.io"].MatchConditions, 1)
			assert.Len(t, byName["claims.petfabric.io"].MatchConditions, 1)
			assert.Len(t, byName["pods.petfabric.io"].MatchConditions, 1)
		})
	}
}

// TestSchedulingGateHook: the pod hook, the webhook's --scheduling-gate and the loop's right to
// patch pods come and go together, and need the reconcile loop (which removes the gate).
func TestSchedulingGateHook(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		on           bool
	}{
		{"default", "", true},
		{"gate off", "webhook:\n  schedulingGate: false\n", false},
		{"no reconcile loop", "webhook:\n  reconcile: false\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, "default", tc.values)
			_, byName := hooks(t, objs)
			_, hook := byName["pods.petfabric.io"]
			assert.Equal(t, tc.on, hook)
			var dep appsv1.Deployment
			decode(t, objs, "Deployment", webhookName, &dep)
			assert.Contains(t, container(t, dep.Spec.Template.Spec, "webhook").Args, fmt.Sprintf("--scheduling-gate=%t", tc.on))
			var role rbacv1.ClusterRole
			decode(t, objs, "ClusterRole", webhookName, &role)
			patch := slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
				return slices.Contains(r.Resources, "pods") && slices.Contains(r.Verbs, "patch")
			})
			assert.Equal(t, tc.on, patch, "the loop may patch pods")
		})
	}
}

// TestWebhookClaimConditionNamesClassesAndAnnotations: the claim hook's condition names the
// annotations the claim handler acts on (pkg/mutate) and every Datera class: the chart's and
// webhook.claimClasses. (test/e2e proves on a real apiserver which claims reach the hook.)
func TestWebhookClaimConditionNamesClassesAndAnnotations(t *testing.T) {
	_, byName := hooks(t, render(t, "existing-issuer", ""))
	expr := byName["claims.petfabric.io"].MatchConditions[0].Expression
	for _, want := range []string{
		"'" + mutate.AnnStatefulSet + "' in object.metadata.annotations",
		"'" + mutate.AnnClaimTemplate + "' in object.metadata.annotations",
		`object.spec.storageClassName in ["datera-gold","datera-legacy"]`,
		"'" + mutate.BetaClassAnnotation + "' in object.metadata.annotations",
	} {
		assert.Contains(t, expr, want)
	}
}

// TestCertificatesMatchServices: each serving Certificate's dnsNames are the names of the
// Service it serves, and its Secret is the one the Deployment mounts, as a whole directory
// the program's --tls-* flags point into.
func TestCertificatesMatchServices(t *testing.T) {
	objs := render(t, "default", "")
	cert := helmchart.Find(objs, "Certificate", webhookCert)
	require.NotNil(t, cert)
	dns, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	var svc corev1.Service
	decode(t, objs, "Service", webhookName, &svc)
	assert.Equal(t, []string{svc.Name, svc.Name + "." + ns, svc.Name + "." + ns + ".svc", svc.Name + "." + ns + ".svc.cluster.local"}, dns)
	secret, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")

	var dep appsv1.Deployment
	decode(t, objs, "Deployment", webhookName, &dep)
	requireTLSMount(t, dep.Spec.Template.Spec, "webhook", secret)
}

// requireTLSMount: container name mounts Secret secret as a directory, and its --tls-cert-file
// and --tls-key-file are tls.crt and tls.key in it.
func requireTLSMount(t *testing.T, pod corev1.PodSpec, name, secret string) {
	t.Helper()
	var vol string
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secret {
			vol = v.Name
			assert.Empty(t, v.Secret.Items, "the whole Secret, not chosen keys")
		}
	}
	require.NotEmpty(t, vol, "a volume of Secret %s", secret)
	c := container(t, pod, name)
	var dir string
	for _, m := range c.VolumeMounts {
		if m.Name == vol {
			dir = m.MountPath
			assert.Empty(t, m.SubPath)
			assert.True(t, m.ReadOnly)
		}
	}
	require.NotEmpty(t, dir, "container %s mounts %s", name, vol)
	assert.Contains(t, c.Args, "--tls-cert-file="+dir+"/tls.crt")
	assert.Contains(t, c.Args, "--tls-key-file="+dir+"/tls.key")
}

func container(t *testing.T, pod corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range pod.Containers {
		if c.Name == name {
			return c
		}
	}
	require.Failf(t, "no container", "container %s", name)
	return corev1.Container{}
}

// TestWebhookDeployment: two replicas spread over nodes, a PDB, probes on the health listener,
// the restricted securityContext.
func TestWebhookDeployment(t *testing.T) {
	objs := render(t, "default", "")
	var dep appsv1.Deployment
	decode(t, objs, "Deployment", webhookName, &dep)
	assert.Equal(t, int32(2), *dep.Spec.Replicas)
	pod := dep.Spec.Template.Spec
	assert.Equal(t, "petfabric-webhook", pod.ServiceAccountName)
	require.NotNil(t, pod.Affinity)
	require.NotNil(t, pod.Affinity.PodAntiAffinity)
	terms := pod.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
	require.Len(t, terms, 1)
	assert.Equal(t, "kubernetes.io/hostname", terms[0].PodAffinityTerm.TopologyKey)
	sel, err := metav1.LabelSelectorAsSelector(terms[0].PodAffinityTerm.LabelSelector)
	require.NoError(t, err)
	assert.True(t, sel.Matches(labels.Set(dep.Spec.Template.Labels)), "anti-affinity selects the webhook's own pods")

	var pdb policyv1.PodDisruptionBudget
	decode(t, objs, "PodDisruptionBudget", webhookName, &pdb)
	assert.Equal(t, 1, pdb.Spec.MinAvailable.IntValue())
	pdbSel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	require.NoError(t, err)
	assert.True(t, pdbSel.Matches(labels.Set(dep.Spec.Template.Labels)))

	c := container(t, pod, "webhook")
	assert.Equal(t, []string{"/usr/local/bin/webhook"}, c.Command)
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
		require.NotNil(t, p)
		require.NotNil(t, p.HTTPGet)
		assert.Equal(t, "health", p.HTTPGet.Port.String())
	}
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	assert.Contains(t, c.Args, "--health-listen=:8080")
	requireRestricted(t, pod, c)

	// One replica: no PDB (it would block every drain).
	objs = render(t, "policies-off", "")
	assert.Nil(t, helmchart.Find(objs, "PodDisruptionBudget", webhookName))
}

// requireRestricted: the pod and container meet the restricted Pod Security Standard.
func requireRestricted(t *testing.T, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	require.NotNil(t, pod.SecurityContext)
	assert.True(t, *pod.SecurityContext.RunAsNonRoot)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, pod.SecurityContext.SeccompProfile.Type)
	sc := c.SecurityContext
	require.NotNil(t, sc, c.Name)
	assert.False(t, *sc.AllowPrivilegeEscalation, c.Name)
	assert.True(t, *sc.ReadOnlyRootFilesystem, c.Name)
	assert.True(t, *sc.RunAsNonRoot, c.Name)
	assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, c.Name)
	assert.Empty(t, sc.Capabilities.Add, c.Name)
	assert.Nil(t, sc.Privileged, c.Name)
}

// TestTLSModes: the self-signed chain, an existing issuer, or no cert-manager at all.
func TestTLSModes(t *testing.T) {
	for _, tc := range []struct {
		name, ci     string
		issuers      []string
		certificates []string
		issuerRef    map[string]any
	}{
		{"self-signed chain", "default", []string{"petfabric-selfsign", "petfabric-ca"}, []string{"petfabric-ca", webhookCert, extenderCert},
			map[string]any{"group": "cert-manager.io", "kind": "Issuer", "name": "petfabric-ca"}},
		{"existing issuer", "existing-issuer", nil, []string{webhookCert, extenderCert},
			map[string]any{"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "corp-ca"}},
		{"provided caBundle", "provided-cabundle", nil, nil, nil},
		{"url mode", "url-mode", nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, tc.ci, "")
			names := func(kind string) []string {
				var out []string
				for _, o := range helmchart.OfKind(objs, kind) {
					out = append(out, o.GetName())
				}
				return out
			}
			assert.ElementsMatch(t, tc.issuers, names("Issuer"))
			assert.ElementsMatch(t, tc.certificates, names("Certificate"))
			if tc.issuerRef != nil {
				ref, _, _ := unstructured.NestedMap(helmchart.Find(objs, "Certificate", webhookCert).Object, "spec", "issuerRef")
				assert.Equal(t, tc.issuerRef, ref)
			}
		})
	}
	t.Run("provided secret is mounted", func(t *testing.T) {
		var dep appsv1.Deployment
		decode(t, render(t, "provided-cabundle", ""), "Deployment", webhookName, &dep)
		requireTLSMount(t, dep.Spec.Template.Spec, "webhook", "petfabric-webhook-serving")
	})
	t.Run("caBundle and issuerRef together are refused", func(t *testing.T) {
		_, err := helmchart.Template(t, "tls:\n  issuerRef: {name: x}\n", "--values", ciFile("provided-cabundle"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "tls.caBundle and tls.issuerRef exclude each other")
	})
	for _, tc := range []struct{ url, field, host string }{
		{"https://127.0.0.1:8443", "ipAddresses", "127.0.0.1"},
		{"https://[::1]:8443", "ipAddresses", "::1"},
		{"https://hook.example.com:9443", "dnsNames", "hook.example.com"},
	} {
		t.Run("url mode with cert-manager: "+tc.url, func(t *testing.T) {
			objs := helmchart.Objects(t, helmchart.Render(t, "webhook:\n  url: "+tc.url+"\n"))
			cert := helmchart.Find(objs, "Certificate", webhookCert)
			require.NotNil(t, cert, "the out-of-cluster webhook serves the Certificate's Secret")
			spec, _, _ := unstructured.NestedMap(cert.Object, "spec")
			assert.Equal(t, []any{tc.host}, spec[tc.field], "the URL's host is the certificate's only name")
			mwc, _ := hooks(t, objs)
			assert.Equal(t, ns+"/"+webhookCert, mwc.Annotations["cert-manager.io/inject-ca-from"])
			assert.Nil(t, helmchart.Find(objs, "Deployment", webhookName), "no in-cluster webhook in url mode")
		})
	}
}

// TestRBACIsNarrow: no wildcard anywhere, no cluster-wide access to Secrets, and Secrets
// only by name.
func TestRBACIsNarrow(t *testing.T) {
	for _, f := range ciValues(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			objs := helmchart.Objects(t, helmchart.Render(t, "", "--values", f))
			for _, kind := range []string{"ClusterRole", "Role"} {
				for _, o := range helmchart.OfKind(objs, kind) {
					var rules []rbacv1.PolicyRule
					if kind == "ClusterRole" {
						var r rbacv1.ClusterRole
						require.NoError(t, helmchart.Decode(o, &r))
						rules = r.Rules
					} else {
						var r rbacv1.Role
						require.NoError(t, helmchart.Decode(o, &r))
						rules = r.Rules
					}
					for _, r := range rules {
						all := strings.Join(append(append(append([]string{}, r.APIGroups...), r.Resources...), r.Verbs...), ",")
						assert.NotContains(t, all, "*", "%s %s: %+v", kind, o.GetName(), r)
						for _, res := range r.Resources {
							if res != "secrets" {
								continue
							}
							assert.NotEqual(t, "ClusterRole", kind, "%s: Secrets cluster-wide", o.GetName())
							assert.NotEmpty(t, r.ResourceNames, "%s %s: Secrets only by name", kind, o.GetName())
							assert.NotContains(t, r.Verbs, "list", "%s %s", kind, o.GetName())
							assert.NotContains(t, r.Verbs, "watch", "%s %s", kind, o.GetName())
						}
					}
				}
			}
		})
	}
}

// TestStorageClasses: each class uses petfabric's provisioner (the one pkg/mutate serves) and
// names the chart's credentials Secret.
func TestStorageClasses(t *testing.T) {
	objs := render(t, "default", "")
	var sc storagev1.StorageClass
	decode(t, objs, "StorageClass", "datera-gold", &sc)
	assert.Equal(t, mutate.Provisioner, sc.Provisioner)
	for _, f := range ciValues(t) {
		for _, o := range helmchart.OfKind(helmchart.Objects(t, helmchart.Render(t, "", "--values", f)), "StorageClass") {
			server, _, _ := unstructured.NestedString(o.Object, "parameters", "backstoreServer")
			assert.True(t, pvoptions.ValidBackstoreServer(server), "%s: class %s: backstoreServer %q is not one the webhook accepts", filepath.Base(f), o.GetName(), server)
		}
	}
	assert.Equal(t, storagev1.VolumeBindingWaitForFirstConsumer, *sc.VolumeBindingMode)
	assert.Equal(t, corev1.PersistentVolumeReclaimRetain, *sc.ReclaimPolicy)
	assert.Equal(t, map[string]string{"backstoreServer": "datera.example.com:7718", "fsType": "xfs", "replica": "3",
		"secretName": "petfabric-datera", "secretNamespace": ns}, sc.Parameters)
	var secret corev1.Secret
	decode(t, objs, "Secret", "petfabric-datera", &secret)
	assert.Equal(t, map[string]string{"username": "admin", "password": "secret"}, secret.StringData)

	// Defaults of a class given only its name and backstoreServer.
	objs = render(t, "", "storageClasses: [{name: plain, backstoreServer: 'd.example.com:7717'}]\ndatera: {username: u, password: p}\n")
	decode(t, objs, "StorageClass", "plain", &sc)
	assert.Equal(t, storagev1.VolumeBindingWaitForFirstConsumer, *sc.VolumeBindingMode)
	assert.Equal(t, corev1.PersistentVolumeReclaimRetain, *sc.ReclaimPolicy)
	assert.False(t, *sc.AllowVolumeExpansion)
	assert.Equal(t, "xfs", sc.Parameters["fsType"])
	assert.Equal(t, "3", sc.Parameters["replica"])

	// An existing Secret: none rendered, the classes and the webhook's Role name it.
	objs = render(t, "existing-issuer", "")
	assert.Empty(t, helmchart.OfKind(objs, "Secret"))
	decode(t, objs, "StorageClass", "datera-gold", &sc)
	assert.Equal(t, "datera-creds", sc.Parameters["secretName"])
	var role rbacv1.Role
	decode(t, objs, "Role", webhookName, &role)
	assert.Contains(t, fmt.Sprint(role.Rules), "[datera-creds]")
}
