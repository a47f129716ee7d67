package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/client"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
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

// holders lists the alive members other than this one, those that publish
// ref in nodes/<node>/images first.
func (p *peers) holders(ctx context.Context, ref string) ([]string, error) {
	ms, err := p.st.Members(ctx)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	var have, others []string
	for _, m := range ms {
		if m.Name == p.node || (m.Status != gossipapi.StatusAlive && m.Status != gossipapi.StatusSuspect) {
			continue
		}
		var ni appapi.NodeImages
		if e, err := p.st.Get(ctx, appapi.ImagesKey(m.Name)); err == nil && json.Unmarshal(e.Value, &ni) == nil && ni.Has(ref) {
			have = append(have, m.Name)
		} else {
			others = append(others, m.Name)
		}
	}
	sort.Strings(have)
	sort.Strings(others)
	return append(have, others...), nil
}

// FetchImage opens an OCI archive of ref from the first peer that has it:
// those that publish it first, then every other alive member in turn (a
// list may lag). ErrNotFound when none has it.
func (p *peers) FetchImage(ctx context.Context, ref string) (io.ReadCloser, error) {
	nodes, err := p.holders(ctx, ref)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, n := range nodes {
		resp, err := p.raw.Open(ctx, http.MethodGet, relayPath(n, "/v1/images/export?ref="+url.QueryEscape(ref)), nil, nil)
		if err != nil {
			if !errors.Is(err, errdefs.ErrNotFound) {
				errs = append(errs, fmt.Errorf("%s: %w", n, err))
			}
			continue
		}
		return resp.Body, nil
	}
	if len(errs) > 0 {
		return nil, errdefs.New(errdefs.ErrNotFound, "no peer gave image %s: %v", ref, errors.Join(errs...))
	}
	return nil, errdefs.New(errdefs.ErrNotFound, "no peer of %d has image %s", len(nodes), ref)
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
