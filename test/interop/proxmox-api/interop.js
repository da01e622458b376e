// Drives `steward sim` with proxmox-api, an unmodified third-party PVE
// client written against real Proxmox: reads, a digest-checked config
// write, an async start waited on through the task API, pools, volume
// info, and PVE's error shapes (status line reason phrases and bodies) as that client sees them.
// TLS is verified: run.sh hands Node the simulator's certificate.
'use strict';
const assert = require('node:assert/strict');
const proxmoxApi = require('proxmox-api').default;

const url = new URL(process.env.SIM_URL);
const [tokenID, tokenSecret] = [process.env.SIM_TOKEN.slice(0, process.env.SIM_TOKEN.lastIndexOf('=')),
  process.env.SIM_TOKEN.slice(process.env.SIM_TOKEN.lastIndexOf('=') + 1)];

async function main() {
  const px = proxmoxApi({ host: url.hostname, port: Number(url.port), tokenID, tokenSecret });
  let checks = 0;
  const check = (name, fn) => { fn(); checks++; console.log('ok  ', name); };

  const version = await px.version.$get();
  check('version is a PVE 9 version object', () => assert.match(version.version, /^9\./));

  const nodes = await px.nodes.$get();
  check('one online node with an ssl_fingerprint', () => {
    assert.equal(nodes.length, 1);
    assert.equal(nodes[0].status, 'online');
    assert.match(nodes[0].ssl_fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  });
  const node = px.nodes.$(nodes[0].node);

  const vms = await node.qemu.$get({ full: true });
  const cts = await node.lxc.$get();
  check('guest lists carry integer vmids and PVE status words', () => {
    assert.ok(vms.length > 0 && cts.length > 0);
    for (const g of [...vms, ...cts]) {
      assert.equal(typeof g.vmid, 'number');
      assert.ok(['running', 'stopped'].includes(g.status));
    }
  });

  const vm = vms.find(v => v.status === 'stopped');
  assert.ok(vm, 'a stopped VM to work on');
  const api = node.qemu.$(vm.vmid);
  const cfg = await api.config.$get();
  check('qemu config has a 40-hex digest and memory as a string', () => {
    assert.match(cfg.digest, /^[0-9a-f]{40}$/);
    assert.equal(typeof cfg.memory, 'string');
  });

  await api.config.$put({ cores: 3, digest: cfg.digest });
  const cfg2 = await api.config.$get();
  check('config PUT applies and changes the digest', () => {
    assert.equal(cfg2.cores, 3);
    assert.notEqual(cfg2.digest, cfg.digest);
  });

  const upid = await api.status.start.$post();
  check('start returns a UPID', () => assert.match(upid, /^UPID:[^:]+:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:qmstart:\d+:[^:]+:$/));
  let st;
  for (let i = 0; i < 200; i++) {
    st = await node.tasks.$(upid).status.$get();
    if (st.status === 'stopped') break;
    await new Promise(r => setTimeout(r, 25));
  }
  check('the start task stops with exitstatus OK', () => assert.equal(st.exitstatus, 'OK'));
  const cur = await api.status.current.$get();
  check('the VM is running', () => assert.equal(cur.status, 'running'));
  const log = await node.tasks.$(upid).log.$get();
  check('the task log ends in TASK OK', () => assert.equal(log[log.length - 1].t, 'TASK OK'));

  const fails = async (p) => { try { await p; } catch (e) { return e.message; } assert.fail('expected an error'); };
  const missing = await fails(node.qemu.$(999999).config.$get());
  check('unknown vmid: 500 with PVE\'s reason phrase', () =>
    assert.match(missing, /Error 500 Configuration file 'nodes\/[^/]+\/qemu-server\/999999\.conf' does not exist/));
  const bad = await fails(api.config.$put({ cores: 'abc' }));
  check('bad parameter: 400 Parameter verification failed with errors', () => {
    assert.match(bad, /Error 400 Parameter verification failed\./);
    assert.match(bad, /"cores":"type check \('integer'\) failed - got 'abc'"/);
  });
  const stale = await fails(api.config.$put({ cores: 2, digest: cfg.digest }));
  check('stale digest: refused as PVE refuses it', () => assert.match(stale, /checksum mismatch \(file change by other user\?\)/));

  const pools = await px.pools.$get();
  check('pools: an empty list on a node without pools', () => assert.deepEqual(pools, []));
  const disk = Object.entries(cfg).find(([k, v]) => /^(scsi|virtio|sata)\d+$/.test(k) && /^local-lvm:/.test(v));
  assert.ok(disk, 'a local-lvm disk on the VM');
  const volid = disk[1].split(',')[0];
  const vol = await node.storage.$('local-lvm').content.$(volid).$get();
  check('volume info: path, integer size and used, format', () => {
    assert.equal(vol.path, '/dev/pve/' + volid.split(':')[1]);
    assert.ok(Number.isInteger(vol.size) && vol.size > 0 && Number.isInteger(vol.used));
    assert.equal(vol.format, 'raw');
  });
  const novol = await fails(node.storage.$('local-lvm').content.$('local-lvm:vm-999999-disk-0').$get());
  check('missing volume: 500 as the storage plugin fails', () => assert.match(novol, /Error 500 can't get size of/));

  const next = await px.cluster.nextid.$get();
  check('nextid is a free vmid', () => assert.ok(Number(next) >= 100 && ![...vms, ...cts].some(g => g.vmid === Number(next))));
  const res = await px.cluster.resources.$get({ type: 'vm' });
  check('cluster resources list every guest', () => assert.equal(res.length, vms.length + cts.length));

  console.log(`${checks} passed, 0 failed`);
}

main().catch(e => { console.error('FAIL', e); console.log('0 passed, 1 failed'); process.exit(1); });
