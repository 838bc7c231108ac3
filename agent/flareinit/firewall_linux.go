package flareinit

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// FirewallTable is the nftables table flare-init owns (family inet: IPv4
// and IPv6 alike).
const FirewallTable = "flare"

// Rules are the firewall's allow rules; everything else is dropped.
type Rules struct {
	// InTCP are the inbound TCP ports (allowed_ports).
	InTCP []int
	// OutTCP are the outbound TCP ports (allowed_out_ports and the key
	// broker's port); OutUDP the outbound UDP ones (DNS, DHCP).
	OutTCP []int
	OutUDP []int
}

// applyFirewall installs the rules over netlink in one transaction: the
// table with both chains at policy drop appears at once, so no packet
// ever sees a half-built firewall. Loopback and replies to allowed
// connections (conntrack established/related) pass.
func applyFirewall(r Rules) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("firewall: netlink: %w", err)
	}
	drop := nftables.ChainPolicyDrop
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: FirewallTable})
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	// Forwarding is off in the guest kernel unless enabled; a forward
	// chain at drop makes that explicit.
	c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})

	add := func(ch *nftables.Chain, e ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(e, &expr.Verdict{Kind: expr.VerdictAccept})})
	}
	add(in, ifname(expr.MetaKeyIIFNAME, "lo")...)
	add(out, ifname(expr.MetaKeyOIFNAME, "lo")...)
	add(in, established()...)
	add(out, established()...)
	for _, p := range r.InTCP {
		add(in, dport(unix.IPPROTO_TCP, p)...)
	}
	for _, p := range r.OutTCP {
		add(out, dport(unix.IPPROTO_TCP, p)...)
	}
	for _, p := range r.OutUDP {
		add(out, dport(unix.IPPROTO_UDP, p)...)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: install table inet %s: %w", FirewallTable, err)
	}
	return nil
}

func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

func established() []expr.Any {
	mask := make([]byte, 4)
	binary.NativeEndian.PutUint32(mask, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func dport(proto byte, port int) []expr.Any {
	p := make([]byte, 2)
	binary.BigEndian.PutUint16(p, uint16(port))
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p},
	}
}
