package gossipapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"stellar.dev/api/client"
)

// Client is a typed client of gossip.sock.
type Client struct {
	c *client.Client
}

// New wraps a base client pointed at stellar-gossip.
func New(c *client.Client) *Client { return &Client{c: c} }

// Members lists the cluster's members.
func (g *Client) Members(ctx context.Context) ([]Member, error) {
	var ms []Member
	if err := g.c.Do(ctx, http.MethodGet, "/v1/members", nil, &ms); err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	return ms, nil
}

// Get reads one key.
func (g *Client) Get(ctx context.Context, key string) (Entry, error) {
	var e Entry
	if err := g.c.Do(ctx, http.MethodGet, "/v1/state/"+key, nil, &e); err != nil {
		return Entry{}, fmt.Errorf("get %s: %w", key, err)
	}
	return e, nil
}

// List reads every key under prefix.
func (g *Client) List(ctx context.Context, prefix string) (List, error) {
	var l List
	if err := g.c.Do(ctx, http.MethodGet, "/v1/state?prefix="+url.QueryEscape(prefix), nil, &l); err != nil {
		return List{}, fmt.Errorf("list %s: %w", prefix, err)
	}
	return l, nil
}

// Put writes value (encoded as JSON) at key. With ifMatch set the write
// fails with errdefs.ErrConflict unless the key is still at that version.
func (g *Client) Put(ctx context.Context, key string, value any, ifMatch string) (PutResult, error) {
	raw, err := json.Marshal(value)
	if err != nil {
		return PutResult{}, fmt.Errorf("encode %s: %w", key, err)
	}
	h := http.Header{}
	if ifMatch != "" {
		h.Set("If-Match", ifMatch)
	}
	var res PutResult
	if _, err := g.c.Call(ctx, client.Request{Method: http.MethodPut, Path: "/v1/state/" + key, Header: h, In: json.RawMessage(raw), Out: &res}); err != nil {
		return PutResult{}, fmt.Errorf("put %s: %w", key, err)
	}
	return res, nil
}

// Delete removes key (a tombstone). With ifMatch set it fails with a
// conflict unless the key is still at that version.
func (g *Client) Delete(ctx context.Context, key, ifMatch string) error {
	h := http.Header{}
	if ifMatch != "" {
		h.Set("If-Match", ifMatch)
	}
	if _, err := g.c.Call(ctx, client.Request{Method: http.MethodDelete, Path: "/v1/state/" + key, Header: h}); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// Watch streams state events under prefix from local revision rev (0: from
// now) and, when members is true, member events, until ctx is done or fn
// returns an error. A watcher behind the kept history gets errdefs.ErrGone:
// list again and watch from the list's Rev+1.
func (g *Client) Watch(ctx context.Context, prefix string, rev uint64, members bool, fn func(Event) error) error {
	q := url.Values{}
	q.Set("prefix", prefix)
	if rev > 0 {
		q.Set("rev", strconv.FormatUint(rev, 10))
	}
	if members {
		q.Set("members", "true")
	}
	return g.c.WithTimeout(0).Watch(ctx, "/v1/watch?"+q.Encode(), func(raw json.RawMessage) error {
		var ev Event
		if err := json.Unmarshal(raw, &ev); err != nil {
			return fmt.Errorf("decode watch event: %w", err)
		}
		return fn(ev)
	})
}

// SetSubnet publishes this node's subnet in its gossip tags.
func (g *Client) SetSubnet(ctx context.Context, subnet string) error {
	if err := g.c.Do(ctx, http.MethodPut, "/v1/tags/subnet", SubnetTag{Subnet: subnet}, nil); err != nil {
		return fmt.Errorf("publish subnet tag: %w", err)
	}
	return nil
}
