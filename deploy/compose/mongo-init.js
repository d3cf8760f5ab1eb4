// The application user of the compose stack (deploy/k8s/base/mongodb.yaml has the same script):
// run once by the mongo image's entrypoint, on an empty data directory.
db.getSiblingDB("bandvote").createUser({
  user: "bandvote",
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: [{role: "readWrite", db: "bandvote"}],
});
