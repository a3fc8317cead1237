// The rqlite-js client (npm package rqlite-js 2.5.7, pinned in package-lock.json) against a
// running raftlite cluster, through a FOLLOWER. Driven by tests/clients_js.rs, which starts the
// cluster and passes:
//
//   node rqlite_js_check.mjs <follower url> <leader id> <follower id> <url of every node, comma-separated>
//
// with RAFTLITE_TEST_JS_DIR naming the directory where `npm ci` installed this package.json (the
// Rust test sets it, installing the package under target/client-tools/js when needed). Uses the
// client as its README shows: DataApiClient execute/query and the DataResults they return, StatusApiClient status/statusAllHosts, the raw option and errors.
// Each check prints one line; the first failure exits with status 1.

import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import path from 'node:path'

const jsDir = process.env.RAFTLITE_TEST_JS_DIR
if (!jsDir) {
  console.error('RAFTLITE_TEST_JS_DIR is not set (the directory where `npm ci` installed tests/js/package.json)')
  process.exit(2)
}
const require = createRequire(path.join(path.resolve(jsDir), 'package.json'))
const rqlite = require('rqlite-js')
const { DataApiClient, StatusApiClient } = rqlite
const installed = require('rqlite-js/package.json').version
assert.equal(installed, '2.5.7', 'the pinned rqlite-js version')

const [followerUrl, leaderId, followerId, allUrls] = process.argv.slice(2)
if (!followerUrl || !leaderId || !followerId || !allUrls) {
  console.error('usage: rqlite_js_check.mjs <follower url> <leader id> <follower id> <urls>')
  process.exit(2)
}
const hosts = allUrls.split(',')

let step = ''
function check (name) {
  step = name
  console.log(`ok - ${name}`)
}

async function eventually (what, fn, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    let last
    try {
      const value = await fn()
      if (value) return value
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms${last ? `: ${last.message}` : ''}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

async function main () {
  // Writes and default (weak) reads sent to a follower: raftlite forwards them to the leader.
  const db = new DataApiClient(followerUrl)

  let results = await db.execute(
    'CREATE TABLE foo (id integer not null primary key, name text, n integer, r real)')
  assert.equal(results.hasError(), false, `create table: ${results.toString()}`)
  check('execute CREATE TABLE through a follower')

  // Positional parameters: rqlite's [["sql", p1, p2]] body (the client posts the array as is).
  results = await db.execute([['INSERT INTO foo(name, n, r) VALUES(?, ?, ?)', 'fiona', 7, 1.5]])
  assert.equal(results.hasError(), false, results.toString())
  assert.equal(results.get(0).getLastInsertId(), 1)
  assert.equal(results.get(0).getRowsAffected(), 1)
  check('execute INSERT with positional parameters: lastInsertId 1, rowsAffected 1')

  // Named parameters.
  results = await db.execute([['INSERT INTO foo(name, n) VALUES(:name, :n)', { name: 'gus', n: 8 }]])
  assert.equal(results.hasError(), false, results.toString())
  assert.equal(results.get(0).getLastInsertId(), 2)
  check('execute INSERT with named parameters')

  // Several statements in one transaction.
  results = await db.execute([
    "INSERT INTO foo(name, n) VALUES('h1', 1)",
    "INSERT INTO foo(name, n) VALUES('h2', 2)",
  ], { transaction: true })
  assert.equal(results.hasError(), false, results.toString())
  assert.equal(results.get(0).getLastInsertId(), 3)
  assert.equal(results.get(1).getLastInsertId(), 4)
  check('execute two INSERTs in a transaction')

  results = await db.execute('UPDATE foo SET n = n + 100 WHERE id >= 3')
  assert.equal(results.get(0).getRowsAffected(), 2)
  check('execute UPDATE: rowsAffected 2')

  // A single query (GET), default level.
  results = await db.query('SELECT id, name, n, r FROM foo WHERE id = 1')
  assert.equal(results.hasError(), false, results.toString())
  assert.equal(results.get(0).get('name'), 'fiona')
  assert.equal(results.get(0).get('n'), 7)
  assert.equal(results.get(0).get('r'), 1.5)
  assert.deepEqual(results.get(0).toObject(), { id: 1, name: 'fiona', n: 7, r: 1.5 })
  assert.deepEqual(results.get(0).toArray(), [1, 'fiona', 7, 1.5])
  check('query one row: get, toObject, toArray')

  // Every row becomes one DataResult.
  results = await db.query('SELECT id, name FROM foo ORDER BY id', { level: 'strong' })
  assert.deepEqual(results.toArray(), [
    { id: 1, name: 'fiona' },
    { id: 2, name: 'gus' },
    { id: 3, name: 'h1' },
    { id: 4, name: 'h2' },
  ])
  check('query with level strong: all rows')

  // Several queries in one request (POST).
  results = await db.query(['SELECT COUNT(*) AS c FROM foo', 'SELECT name FROM foo WHERE id = 2'])
  assert.equal(results.get(0).get('c'), 4)
  assert.equal(results.get(1).get('name'), 'gus')
  check('query two statements in one request')

  // level none is served by the follower itself: it sees the rows once it has applied them.
  await eventually('level none on the follower sees 4 rows', async () => {
    const r = await db.query('SELECT COUNT(*) AS c FROM foo', { level: 'none' })
    return r.get(0).get('c') === 4
  })
  check('query with level none served by the follower')

  // Timings.
  results = await db.query('SELECT 1 AS one', { timings: true })
  assert.ok(results.getTime() > 0, `time ${results.getTime()}`)
  check('timings')

  // A query with no rows gives a result without values.
  results = await db.query('SELECT * FROM foo WHERE id = 99')
  assert.equal(results.hasError(), false)
  assert.equal(results.get(0).toString(), '{}')
  check('query with no rows')

  // The raw HTTP answer.
  const raw = await db.query('SELECT name FROM foo WHERE id = 1', { raw: true })
  assert.equal(raw.status, 200)
  assert.deepEqual(raw.body.results[0].columns, ['name'])
  assert.deepEqual(raw.body.results[0].values, [['fiona']])
  check('raw option gives status and body')

  // SQL errors come back in the results, as DataResultError.
  results = await db.execute('INSERT INTO nope VALUES(1)')
  assert.equal(results.hasError(), true)
  assert.match(results.getFirstError().message, /no such table: nope/)
  assert.deepEqual(results.getFirstError().toObject(), { error: 'no such table: nope' })
  check('execute error: no such table')

  results = await db.query('SELEC 1')
  assert.equal(results.hasError(), true)
  assert.match(results.getFirstError().message, /syntax error/)
  check('query error: syntax error')

  // A failing statement in a transaction undoes the others.
  results = await db.execute([
    "INSERT INTO foo(name) VALUES('never')",
    'INSERT INTO nope VALUES(1)',
  ], { transaction: true })
  assert.equal(results.hasError(), true)
  results = await db.query("SELECT COUNT(*) AS c FROM foo WHERE name = 'never'", { level: 'strong' })
  assert.equal(results.get(0).get('c'), 0)
  check('failed transaction leaves nothing behind')

  // A request the server refuses (400) is thrown by the HTTP layer (HttpRequest.fetch, which
  // every client method uses) with the status.
  await assert.rejects(
    db.fetch({ uri: '/db/query', query: { q: 'SELECT 1', timeout: '1d' } }),
    (e) => e.response && e.response.status === 400 &&
      /timeout is not a valid duration/.test(JSON.stringify(e.response.data)),
  )
  check('an invalid timeout is a 400 error')

  // Go duration syntax for timeouts, as rqlite takes them.
  const timed = await db.fetch({ uri: '/db/query', query: { q: 'SELECT 1 AS one', timeout: '1m30s' } })
  assert.equal(timed.status, 200)
  check('timeout=1m30s is accepted')

  // Round robin over every node for level none reads.
  const many = new DataApiClient(hosts)
  for (let i = 0; i < hosts.length * 2; i += 1) {
    await eventually('level none on every node sees 4 rows', async () => {
      const r = await many.query('SELECT COUNT(*) AS c FROM foo', { level: 'none' })
      return r.get(0).get('c') === 4
    })
  }
  check('level none reads round robin over every node')

  // The status API: /status as rqlite's (node ids are strings).
  const statusClient = new StatusApiClient(followerUrl)
  const status = await statusClient.status()
  assert.equal(status.status, 200)
  const store = status.body.store
  assert.equal(store.node_id, followerId)
  assert.equal(typeof store.leader.node_id, 'string')
  assert.equal(store.leader.node_id, leaderId)
  assert.equal(typeof store.leader.addr, 'string')
  assert.ok(store.leader.addr.length > 0)
  assert.equal(store.ready, true)
  assert.equal(store.raft.state, 'Follower')
  assert.equal(typeof status.body.runtime.GOOS, 'string')
  assert.equal(typeof status.body.os.pid, 'number')
  assert.equal(typeof status.body.http.bind_addr, 'string')
  assert.equal(typeof status.body.node.uptime, 'string')
  assert.equal(typeof status.body.build.version, 'string')
  check('StatusApiClient.status: store.node_id, store.leader, store.ready')

  const everyStatus = await new StatusApiClient(hosts).statusAllHosts()
  assert.equal(everyStatus.length, hosts.length)
  const leaders = new Set(everyStatus.map(({ response }) => response.body.store.leader.node_id))
  assert.deepEqual([...leaders], [leaderId])
  // rqlite-js 2.5.7's status() asks the first host (useLeader) whatever activeHostIndex
  // statusAllHosts passes, so every answer comes from hosts[0]: only their shape is checked.
  for (const { response } of everyStatus) {
    assert.equal(typeof response.body.store.node_id, 'string')
  }
  check('StatusApiClient.statusAllHosts: one leader seen by all')

  // Readiness, nodes and leader through the client's HTTP layer, HttpRequest.fetch (rqlite-js
  // has no methods for them).
  const ready = await statusClient.fetch({ uri: '/readyz' })
  assert.equal(ready.status, 200)
  assert.match(String(ready.body), /\[\+\]leader ok/)
  check('/readyz is 200 on the follower')

  const nodes = await statusClient.fetch({ uri: '/nodes', query: { ver: 2 } })
  assert.equal(nodes.body.nodes.length, hosts.length)
  for (const n of nodes.body.nodes) {
    assert.equal(typeof n.id, 'string')
    assert.equal(n.reachable, true)
    assert.equal(n.leader, n.id === leaderId)
  }
  check('/nodes?ver=2 lists every node, ids as strings')

  const leader = await statusClient.fetch({ uri: '/leader' })
  assert.equal(leader.body.id, leaderId)
  assert.equal(leader.body.leader, true)
  check('/leader names the leader')
}

main().then(() => {
  console.log('all rqlite-js checks passed')
}, (e) => {
  console.error(`FAILED after "${step}":`, e && e.stack ? e.stack : e)
  if (e && e.response) {
    console.error('HTTP response:', e.response.status, JSON.stringify(e.response.data))
  }
  process.exit(1)
})
