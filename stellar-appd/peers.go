package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/client"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/stellar-appd/internal/containers"
)

// Calls to other nodes' appd go through this node's stellar-gossip
// (GET|POST /v1/peers/{node}/relay/appd/{path...} on gossip.sock), which
// dials the member's peer port with the node certificate; appd holds no
// certificate itself.

// peers reaches other nodes' appd.
type peers struct {
	node string
	st   store
	raw  *client.Client // gossip.sock, no overall timeout (image streams)
}

// relayPath is the gossip.sock path of a call to node's appd.
func relayPath(node, path string) string {
	return "/v1/peers/" + url.PathEscape(node) + "/relay/appd" + path
}

// holder is a peer that may give an image, with the digest it publishes
// for it ("" when its list does not name it).
type holder struct {
	node, digest string
}

// holders lists the alive members other than this one, those that publish
// ref in nodes/<node>/images first.
func (p *peers) holders(ctx context.Context, ref string) ([]holder, error) {
	ms, err := p.st.Members(ctx)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	var have, others []holder
	for _, m := range ms {
		if m.Name == p.node || (m.Status != gossipapi.StatusAlive && m.Status != gossipapi.StatusSuspect) {
			continue
		}
		var ni appapi.NodeImages
		if e, err := p.st.Get(ctx, appapi.ImagesKey(m.Name)); err == nil && json.Unmarshal(e.Value, &ni) == nil && ni.Has(ref) {
			have = append(have, holder{m.Name, ni.Digest(ref)})
		} else {
			others = append(others, holder{node: m.Name})
		}
	}
	sort.Slice(have, func(i, j int) bool { return have[i].node < have[j].node })
	sort.Slice(others, func(i, j int) bool { return others[i].node < others[j].node })
	return append(have, others...), nil
}

// DigestHeader carries the digest of an exported image (its image
// record's target), for a caller whose peer list does not name it yet.
const DigestHeader = "Stellar-Image-Digest"

// FetchImage opens an OCI archive of ref from the first peer that has it,
// skipping the peers in skip (they gave a bad copy): those that publish it
// first, then every other alive member in turn (a list may lag). The
// digest to check is the one the peer publishes (else the one its export
// names). ErrNotFound when no peer has it; ErrUnavailable when a peer
// publishes it but could not be reached (worth another try).
func (p *peers) FetchImage(ctx context.Context, ref string, skip []string) (containers.Fetched, error) {
	nodes, err := p.holders(ctx, ref)
	if err != nil {
		return containers.Fetched{}, errdefs.New(errdefs.ErrUnavailable, "find peers with image %s: %v", ref, err)
	}
	var errs []error
	unreachable := false
	asked := 0
	for _, h := range nodes {
		if slices.Contains(skip, h.node) {
			continue
		}
		asked++
		resp, err := p.raw.Open(ctx, http.MethodGet, relayPath(h.node, "/v1/images/export?ref="+url.QueryEscape(ref)), nil, nil)
		if err != nil {
			if !errors.Is(err, errdefs.ErrNotFound) {
				errs = append(errs, fmt.Errorf("%s: %w", h.node, err))
				unreachable = unreachable || h.digest != ""
			}
			continue
		}
		d := h.digest
		if d == "" {
			d = resp.Header.Get(DigestHeader)
		}
		return containers.Fetched{Body: resp.Body, Digest: d, From: h.node}, nil
	}
	if unreachable {
		return containers.Fetched{}, errdefs.New(errdefs.ErrUnavailable, "a peer publishes image %s but did not give it: %v", ref, errors.Join(errs...))
	}
	if len(errs) > 0 {
		return containers.Fetched{}, errdefs.New(errdefs.ErrNotFound, "no peer gave image %s: %v", ref, errors.Join(errs...))
	}
	if len(skip) > 0 {
		return containers.Fetched{}, errdefs.New(errdefs.ErrNotFound, "no other peer of %d has image %s (skipped %v)", asked, ref, skip)
	}
	return containers.Fetched{}, errdefs.New(errdefs.ErrNotFound, "no peer of %d has image %s", asked, ref)
}

// publishImages keeps nodes/<node>/images up to date: at once, every 30 s,
// and whenever changed is signalled (import, remove, fetch).
func (s *service) publishImages(ctx context.Context, changed <-chan struct{}) {
	var last string
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		if imgs, err := s.rt.Images(ctx); err == nil {
			ni := appapi.NodeImages{Images: []appapi.ImageRef{}}
			for _, im := range imgs {
				ni.Images = append(ni.Images, appapi.ImageRef{Name: im.Name, Digest: im.Digest})
			}
			sort.Slice(ni.Images, func(i, j int) bool { return ni.Images[i].Name < ni.Images[j].Name })
			raw, _ := json.Marshal(ni)
			if string(raw) != last {
				if _, err := s.st.Put(ctx, appapi.ImagesKey(s.node), ni, ""); err == nil {
					last = string(raw)
				} else {
					s.env.Log.Debug("publish image list", "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
		}
	}
}

// setPlacementTag publishes the placement version in the serf tags
// (PUT /v1/tags/placement on gossip.sock), retrying until gossip answers.
func (s *service) setPlacementTag(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.peers.raw.Do(ctx, http.MethodPut, "/v1/tags/placement", map[string]string{"placement": placementVersion}, nil)
		if err == nil {
			return
		}
		s.env.Log.Debug("set placement tag", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

// placementVersion is the placement algorithm this appd computes (DESIGN
// section 6: placement v1).
const placementVersion = "1"
