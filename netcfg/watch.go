package netcfg

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WatchTable calls fn each time table inet tgtun is deleted (`nft flush ruleset`, `fw4
// flush`, or Apply replacing it, which fn must take calmly), from nftables' own change
// notifications, until ctx is done. It lets the daemon rebuild at once instead of at its
// next periodic check. It returns nil when ctx is done, or why the notifications stopped.
//
// It reads the nftables multicast group itself: google/nftables' Monitor delivers its
// events only at the end of a generation (NFT_MSG_NEWGEN), which its own filter drops
// unless every kind of event is subscribed, set elements included (thousands per list
// update). Here only DELTABLE messages are parsed, by name.
func WatchTable(ctx context.Context, fn func()) error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return fmt.Errorf("nftables notifications: %w", err)
	}
	defer c.Close()
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		return fmt.Errorf("nftables notifications: join group: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	delTable := netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_DELTABLE)
	for {
		msgs, err := c.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if isNoBufs(err) {
				fn() // notifications were lost: one of them may have been ours
				continue
			}
			return fmt.Errorf("nftables notifications: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type == delTable && isOurTable(m.Data) {
				fn()
			}
		}
	}
}

func isNoBufs(err error) bool {
	var oe *netlink.OpError
	return errors.As(err, &oe) && oe.Err == unix.ENOBUFS
}

// isOurTable tells whether a table message (struct nfgenmsg, then attributes) names
// table inet tgtun.
func isOurTable(b []byte) bool {
	if len(b) < 4 || b[0] != unix.NFPROTO_INET {
		return false
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return false
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_TABLE_NAME {
			return ad.String() == TableName
		}
	}
	return false
}

// WatchLinks calls fn with the name of each network device the kernel reports created,
// deleted or changed (up, down, renamed: RTM_NEWLINK and RTM_DELLINK of the link group),
// until ctx is done; fn("") means notifications were lost (the socket overflowed) and
// any device may have changed. It lets the daemon follow an interface proxy's device
// that netifd deleted and created again at once, instead of at its next health round.
// It subscribes again after a lost socket and returns nil when ctx is done, or why it
// could not subscribe.
func WatchLinks(ctx context.Context, fn func(name string)) error {
	for {
		ch := make(chan vnl.LinkUpdate, 64)
		done := make(chan struct{})
		if err := vnl.LinkSubscribeWithOptions(ch, done, vnl.LinkSubscribeOptions{ErrorCallback: func(error) {}}); err != nil {
			return fmt.Errorf("link notifications: %w", err)
		}
		lost := false
		for !lost {
			select {
			case <-ctx.Done():
				close(done)
				for range ch { // the receiver ends when its socket closes
				}
				return nil
			case u, ok := <-ch:
				if !ok {
					lost = true
					break
				}
				fn(u.Link.Attrs().Name)
			}
		}
		close(done)
		fn("")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
