package reconcile

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Error reasons of the errors metric.
const (
	ReasonInvalidOptions  = "invalid_options"   // mutate.Decide refused a StatefulSet
	ReasonBuildPV         = "build_pv"          // the PV of a claim could not be built
	ReasonCreatePV        = "create_pv"         // the API refused a PV create
	ReasonConflict        = "pv_conflict"       // the PV name serves another claim
	ReasonDeletePV        = "delete_pv"         // the API refused a PV delete
	ReasonPrecondition    = "precondition"      // the PV changed since it was judged
	ReasonDateraClient    = "datera_client"     // no Datera client (credentials, endpoint)
	ReasonDateraDelete    = "datera_delete"     // Datera refused or could not be reached
	ReasonMalformedPV     = "malformed_pv"      // a managed PV without flexVolume.options.volumeID
	ReasonLeaderElection  = "leader_election"   // the elector could not be built
	ReasonClaimNotBinding = "claim_not_binding" // a claim exists whose class differs from the PV's
	ReasonFreePV          = "free_pv"           // the API refused freeing a Released PV
	ReasonFence           = "fence"             // a fence could not be carried out (Datera, API)
	ReasonGate            = "scheduling_gate"   // the API refused removing a pod's scheduling gate
)

// Reasons of the owner-mismatch metric: what the loop refused to do.
const (
	OwnerRefusedFree   = "free"   // hand a Released Retain PV to a claim of another owner
	OwnerRefusedDelete = "delete" // delete a Datera volume recorded as another owner's
)

// Reasons of the PV-mismatch metric: how an existing PV differs from its claim's template.
const (
	MismatchClass       = "class"
	MismatchSize        = "size"
	MismatchAccessModes = "access_modes"
	MismatchVolume      = "volume" // driver or volumeID
)

type metrics struct {
	pvsCreated      prometheus.Counter
	orphansDeleted  prometheus.Counter
	releasedDeleted prometheus.Counter
	dateraDeleted   prometheus.Counter
	pvsFreed        prometheus.Counter
	ownerRefused    *prometheus.CounterVec
	pvMismatch      *prometheus.CounterVec
	pvsReplaced     prometheus.Counter
	ordinalCeiling  prometheus.Counter
	fences          prometheus.Counter
	errors          *prometheus.CounterVec
	isLeader        prometheus.Gauge
	gatesRemoved    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pvsCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_pvs_created_total",
			Help: "PersistentVolumes the reconcile loop created for ordinals the webhook missed.",
		}),
		orphansDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_orphans_deleted_total",
			Help: "Available PersistentVolumes deleted after the grace period because no StatefulSet ordinal needs them.",
		}),
		releasedDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_released_pvs_deleted_total",
			Help: "Released or Failed PersistentVolumes with reclaim policy Delete deleted after their Datera volume.",
		}),
		dateraDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_datera_volumes_deleted_total",
			Help: "Datera app_instances deleted for reclaim policy Delete (including ones already gone).",
		}),
		pvsFreed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_released_pvs_freed_total",
			Help: "Released Retain PersistentVolumes handed to the re-created claim of the same owner.",
		}),
		ownerRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petfabric_reconcile_owner_mismatch_total",
			Help: "Volumes the loop refused to hand over (action=free) or delete (action=delete) because the recorded owner differs.",
		}, []string{"action"}),
		pvMismatch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petfabric_reconcile_pv_mismatch_total",
			Help: "Existing petfabric PersistentVolumes found not matching their claim template (counted once per distinct finding).",
		}, []string{"reason"}),
		pvsReplaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_pvs_replaced_total",
			Help: "Mismatching PersistentVolumes replaced because it was safe (never bound, no claim, no other owner's data).",
		}),
		ordinalCeiling: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_ordinal_ceiling_total",
			Help: "StatefulSets found with ordinals at or above the ceiling (counted once per distinct spec); no PVs are created for those ordinals.",
		}),
		fences: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_fences_total",
			Help: "Initiators of dead holders removed from a ReadWriteOnce volume's ACL.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petfabric_reconcile_errors_total",
			Help: "Reconcile errors by reason.",
		}, []string{"reason"}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "petfabric_reconcile_is_leader",
			Help: "1 while this replica holds the reconcile lease and runs the loop.",
		}),
		gatesRemoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_scheduling_gates_removed_total",
			Help: "petfabric.io/claims-bound scheduling gates removed from pods whose petfabric claims were all Bound.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.pvsCreated, m.orphansDeleted, m.releasedDeleted, m.dateraDeleted,
			m.pvsFreed, m.ownerRefused, m.pvMismatch, m.pvsReplaced, m.ordinalCeiling, m.fences, m.errors, m.isLeader, m.gatesRemoved} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
