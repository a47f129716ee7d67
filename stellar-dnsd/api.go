package main

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"stellar.dev/api/dnsapi"
	"stellar.dev/api/errdefs"
	"stellar.dev/daemon/httpapi"
	"stellar.dev/stellar-dnsd/internal/zone"
)

// routes registers the local API on the daemon's mux.
func (s *service) routes() {
	m := s.env.Mux
	m.Handle("GET /v1/records", httpapi.Handle(s.listRecords))
	m.Handle("POST /v1/records", httpapi.Handle(s.createRecord))
	m.Handle("DELETE /v1/records/{name}", httpapi.Handle(s.deleteRecords))
	m.Handle("GET /v1/status", httpapi.Handle(s.status))
}

// customRecords reads the custom records of the prefix from the cluster
// state (fresher than the zone, which follows it within a second).
func (s *service) customRecords(ctx context.Context, prefix string) ([]dnsapi.Record, map[string]string, error) {
	l, err := s.gossip.List(ctx, prefix)
	if err != nil {
		return nil, nil, errdefs.New(errdefs.ErrUnavailable, "read custom records from stellar-gossip: %v", err)
	}
	var out []dnsapi.Record
	keys := map[string]string{}
	for _, e := range l.Entries {
		var r dnsapi.Record
		if err := json.Unmarshal(e.Value, &r); err != nil {
			s.log.Warn("unreadable custom record in the state", "key", e.Key, "err", err)
			continue
		}
		n, err := dnsapi.Normalize(r)
		if err != nil {
			s.log.Warn("invalid custom record in the state", "key", e.Key, "err", err)
			continue
		}
		n.Source = dnsapi.SourceCustom
		n.Created = r.Created
		out = append(out, n)
		keys[dnsapi.RecordKey(n)] = e.Key
	}
	return out, keys, nil
}

func (s *service) listRecords(w http.ResponseWriter, r *http.Request) error {
	source := r.URL.Query().Get("source")
	if source != "" && source != dnsapi.SourceCustom && source != dnsapi.SourceService {
		return errdefs.New(errdefs.ErrInvalidArgument, "source %q is not %q or %q", source, dnsapi.SourceCustom, dnsapi.SourceService)
	}
	out := []dnsapi.Record{}
	if source != dnsapi.SourceCustom {
		z := s.h.Zone()
		if z == nil {
			return errdefs.New(errdefs.ErrUnavailable, "the zone is not synced with the cluster state yet (is stellar-gossip running?)")
		}
		for _, rec := range z.Records() {
			if rec.Source == dnsapi.SourceService {
				out = append(out, rec)
			}
		}
	}
	if source != dnsapi.SourceService {
		custom, _, err := s.customRecords(r.Context(), dnsapi.RecordPrefix)
		if err != nil {
			return err
		}
		out = append(out, custom...)
	}
	slices.SortStableFunc(out, func(a, b dnsapi.Record) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.Value, b.Value)
	})
	httpapi.WriteJSON(w, http.StatusOK, dnsapi.RecordList{Records: out})
	return nil
}

func (s *service) createRecord(w http.ResponseWriter, r *http.Request) error {
	var in dnsapi.Record
	if err := httpapi.DecodeJSON(r, &in); err != nil {
		return err
	}
	if in.Source != "" || in.Node != "" || !in.Created.IsZero() {
		return errdefs.New(errdefs.ErrInvalidArgument, "source, node and created are set by stellar-dnsd, not by the caller")
	}
	rec, err := dnsapi.Normalize(in)
	if err != nil {
		return err
	}
	if err := s.checkConflicts(r.Context(), rec); err != nil {
		return err
	}
	rec.Created = time.Now().UTC().Truncate(time.Second)
	if _, err := s.gossip.Put(r.Context(), dnsapi.RecordKey(rec), rec, ""); err != nil {
		return errdefs.New(errdefs.ErrUnavailable, "store record %s %s in the cluster state: %v", rec.Name, rec.Type, err)
	}
	s.log.Info("custom record created", "name", rec.Name, "type", rec.Type, "value", rec.Value, "ttl", rec.TTL)
	rec.Source = dnsapi.SourceCustom
	httpapi.WriteJSON(w, http.StatusCreated, rec)
	return nil
}

// checkConflicts refuses what would break the zone: a CNAME beside other
// data at one name, and records over the zone's own apex and SOA.
func (s *service) checkConflicts(ctx context.Context, rec dnsapi.Record) error {
	origin := zone.Fqdn(s.cfg.Domain)
	fq := dns.Fqdn(rec.Name)
	if fq == origin {
		return errdefs.New(errdefs.ErrInvalidArgument, "record %s: the zone's apex is Stellar's own", rec.Name)
	}
	existing, _, err := s.customRecords(ctx, dnsapi.NamePrefix(rec.Name))
	if err != nil {
		return err
	}
	for _, e := range existing {
		if e.Name != rec.Name {
			continue
		}
		if rec.Type == dnsapi.TypeCNAME && e.Type == dnsapi.TypeCNAME && e.Value != rec.Value {
			return errdefs.New(errdefs.ErrConflict, "record %s already has the CNAME %s: delete it first (sctl nameserver delete %s --type CNAME)", rec.Name, e.Value, rec.Name)
		}
		if (rec.Type == dnsapi.TypeCNAME) != (e.Type == dnsapi.TypeCNAME) {
			return errdefs.New(errdefs.ErrConflict, "record %s %s: a CNAME cannot share its name with other records (%s %s exists)", rec.Name, rec.Type, e.Type, e.Value)
		}
	}
	if rec.Type == dnsapi.TypeCNAME {
		if z := s.h.Zone(); z != nil {
			for _, sr := range z.Records() {
				if sr.Source == dnsapi.SourceService && sr.Name == rec.Name {
					return errdefs.New(errdefs.ErrConflict, "record %s CNAME: the name belongs to running instances", rec.Name)
				}
			}
		}
	}
	return nil
}

func (s *service) deleteRecords(w http.ResponseWriter, r *http.Request) error {
	name := dnsapi.NormalizeName(r.PathValue("name"))
	if err := dnsapi.ValidateName(name); err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "record name: %v", err)
	}
	typ := strings.ToUpper(r.URL.Query().Get("type"))
	if typ != "" && !slices.Contains(dnsapi.Types, typ) {
		return errdefs.New(errdefs.ErrInvalidArgument, "type %q is not one of %s", typ, strings.Join(dnsapi.Types, ", "))
	}
	recs, keys, err := s.customRecords(r.Context(), dnsapi.NamePrefix(name))
	if err != nil {
		return err
	}
	res := dnsapi.DeleteResult{Deleted: []dnsapi.Record{}}
	for _, rec := range recs {
		if rec.Name != name || (typ != "" && rec.Type != typ) {
			continue
		}
		if err := s.gossip.Delete(r.Context(), keys[dnsapi.RecordKey(rec)], ""); err != nil {
			return errdefs.New(errdefs.ErrUnavailable, "delete record %s %s from the cluster state: %v", rec.Name, rec.Type, err)
		}
		res.Deleted = append(res.Deleted, rec)
		s.log.Info("custom record deleted", "name", rec.Name, "type", rec.Type, "value", rec.Value)
	}
	if len(res.Deleted) == 0 {
		what := name
		if typ != "" {
			what += " " + typ
		}
		return errdefs.New(errdefs.ErrNotFound, "no custom record %s", what)
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (s *service) status(w http.ResponseWriter, r *http.Request) error {
	st := dnsapi.Status{Domain: zone.Fqdn(s.cfg.Domain), Upstreams: s.upstreams()}
	if st.Upstreams == nil {
		st.Upstreams = []string{}
	}
	if z := s.h.Zone(); z != nil {
		zs := z.Stats()
		st.Synced, st.Serial, st.Names, st.Instances, st.Custom, st.Updated = true, z.Serial(), zs.Names, zs.Instances, zs.Custom, z.Built().UTC()
	}
	if err := s.mirror.Err(); err != nil {
		st.GossipError = err.Error()
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
	return nil
}
