// json-server 0.17.4, unmodified, started through its documented module API the way its command
// line starts it (the same defaults: request log, CORS, no-cache, body parser; the router on
// db.json), with one difference: the router given the file's path saves db.json before it
// answers. The command line saves it asynchronously and answers first, so a kill -9 just after
// an answer can lose what the instance acknowledged; the soak kills instances on purpose.
// Usage: node json_server.js HOST PORT DB_JSON
const jsonServer = require('json-server');

const [host, port, file] = process.argv.slice(2);
const app = jsonServer.create();
app.use(jsonServer.defaults({ bodyParser: true }));
app.use(jsonServer.router(file));
app.listen(Number(port), host, () => {
  console.log(`json-server on http://${host}:${port}, saving ${file} before each answer`);
});
