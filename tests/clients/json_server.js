// json-server 0.17.4, unmodified, started through its documented module API the way its command
// line starts it (the same defaults: request log, CORS, no-cache, body parser; the router on
// db.json), with two differences, both about an instance the soak kills on purpose (kill -9):
// - it saves db.json before it answers. The command line saves it asynchronously and answers
//   first, so a kill just after an answer could lose what the instance acknowledged;
// - it saves by writing a new file and renaming it over db.json. lowdb's FileSync, which the
//   router uses for a file path, rewrites db.json in place (truncate, then write), so a kill in
//   between left it empty, and json-server then started with no collection at all (every
//   request to /pods answered 404 `{}`). Renaming leaves either the old file or the new one.
// Usage: node json_server.js HOST PORT DB_JSON
const fs = require('fs');
const path = require('path');
const jsonServer = require('json-server');

// lowdb as json-server itself depends on it (1.0: adapters with read and write).
const ofJsonServer = (name) =>
  require(require.resolve(name, { paths: [path.dirname(require.resolve('json-server'))] }));
const low = ofJsonServer('lowdb');
const FileSync = ofJsonServer('lowdb/adapters/FileSync');

class ReplacingFileSync extends FileSync {
  write(data) {
    const next = `${this.source}.next`;
    fs.writeFileSync(next, this.serialize(data));
    fs.renameSync(next, this.source);
  }
}

const [host, port, file] = process.argv.slice(2);
const app = jsonServer.create();
app.use(jsonServer.defaults({ bodyParser: true }));
app.use(jsonServer.router(low(new ReplacingFileSync(file))));
app.listen(Number(port), host, () => {
  console.log(`json-server on http://${host}:${port}, saving ${file} (replaced whole) before each answer`);
});
