// The Hive 2.3.9 metastore (pyspark's own jars) serving Thrift on one address only.
//
// Hive 2.3 has no bind-host setting for the metastore (HiveMetaStore -p binds every interface), so the
// embedded stack starts the same handler behind a server socket bound to 127.0.0.1. Run with Java's
// single-file source launcher: java -cp "CONF_DIR:pyspark/jars/*:..." LoopbackMetastore.java HOST PORT [--init-txn]
// --init-txn (first start) also creates the lock/transaction tables Iceberg's (and Trino's) commit lock
// needs: DataNucleus' autoCreateAll makes only the catalog schema.
//
// Hive 2.3's own DDL for those tables (TxnDbUtil.prepDb) is Derby SQL, and its per-database scripts
// ship only in Hive's binary tarball, not in any jar on Maven Central. On another database (Postgres in
// the cluster profile) the tables are therefore made by Hive itself in an in-memory Derby and copied,
// definitions and seed rows, with Derby's types mapped; idempotent (nothing is done when they exist).
import java.net.InetSocketAddress;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.hive.metastore.HiveMetaStore;
import org.apache.hadoop.hive.metastore.IHMSHandler;
import org.apache.hadoop.hive.metastore.RetryingHMSHandler;
import org.apache.hadoop.hive.metastore.api.ThriftHiveMetastore;
import org.apache.hadoop.hive.metastore.txn.TxnDbUtil;
import org.apache.thrift.protocol.TBinaryProtocol;
import org.apache.thrift.server.TThreadPoolServer;
import org.apache.thrift.transport.TServerSocket;
import org.apache.thrift.transport.TTransportFactory;

public class LoopbackMetastore {
    public static void main(String[] args) throws Exception {
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        HiveConf conf = new HiveConf(HiveMetaStore.HMSHandler.class);
        IHMSHandler handler = RetryingHMSHandler.getProxy(
            conf, new HiveMetaStore.HMSHandler("loopback metastore", conf, false), false);
        if (args.length > 2 && args[2].equals("--init-txn")) {
            String url = conf.getVar(HiveConf.ConfVars.METASTORECONNECTURLKEY);
            if (url.startsWith("jdbc:derby:")) {
                TxnDbUtil.prepDb(conf);
                System.out.println("metastore transaction tables created");
            } else {
                copyTxnTables(conf, url);
            }
        }
        TServerSocket socket = new TServerSocket(new InetSocketAddress(host, port));
        TThreadPoolServer.Args serverArgs = new TThreadPoolServer.Args(socket)
            .processor(new ThriftHiveMetastore.Processor<>(handler))
            .transportFactory(new TTransportFactory())
            .protocolFactory(new TBinaryProtocol.Factory())
            .minWorkerThreads(2)
            .maxWorkerThreads(64);
        System.out.println("metastore listening on " + host + ":" + port);
        new TThreadPoolServer(serverArgs).serve();
    }

    /** Hive's transaction tables, made by TxnDbUtil in an in-memory Derby, created in the catalog database. */
    static void copyTxnTables(HiveConf conf, String url) throws Exception {
        String user = conf.getVar(HiveConf.ConfVars.METASTORE_CONNECTION_USER_NAME);
        String password = conf.getVar(HiveConf.ConfVars.METASTOREPWD);
        try (Connection target = DriverManager.getConnection(url, user, password)) {
            try (ResultSet rs = target.getMetaData().getTables(null, null, "next_lock_id", new String[] {"TABLE"})) {
                if (rs.next()) {
                    System.out.println("metastore transaction tables present");
                    return;
                }
            }
            HiveConf derby = new HiveConf(conf);
            derby.setVar(HiveConf.ConfVars.METASTORECONNECTURLKEY, "jdbc:derby:memory:txn_schema;create=true");
            derby.setVar(HiveConf.ConfVars.METASTORE_CONNECTION_DRIVER, "org.apache.derby.jdbc.EmbeddedDriver");
            derby.setVar(HiveConf.ConfVars.METASTORE_CONNECTION_USER_NAME, "APP");  // Derby's schema is its user's
            derby.setVar(HiveConf.ConfVars.METASTOREPWD, "");
            TxnDbUtil.prepDb(derby);
            target.setAutoCommit(false);
            int tables = 0;
            try (Connection source = DriverManager.getConnection("jdbc:derby:memory:txn_schema");
                 Statement ddl = target.createStatement()) {
                DatabaseMetaData meta = source.getMetaData();
                List<String> names = new ArrayList<>();
                try (ResultSet rs = meta.getTables(null, "APP", "%", new String[] {"TABLE"})) {
                    while (rs.next()) names.add(rs.getString("TABLE_NAME"));
                }
                for (String table : names) {
                    List<String> columns = new ArrayList<>();
                    List<String> defs = new ArrayList<>();
                    try (ResultSet rs = meta.getColumns(null, "APP", table, "%")) {
                        while (rs.next()) {
                            String column = rs.getString("COLUMN_NAME");
                            columns.add(column);
                            defs.add(column + " " + postgresType(rs.getString("TYPE_NAME"), rs.getInt("COLUMN_SIZE"))
                                     + (rs.getInt("NULLABLE") == DatabaseMetaData.columnNoNulls ? " NOT NULL" : ""));
                        }
                    }
                    List<String> key = new ArrayList<>();
                    try (ResultSet rs = meta.getPrimaryKeys(null, "APP", table)) {
                        while (rs.next()) key.add(rs.getString("COLUMN_NAME"));
                    }
                    if (!key.isEmpty()) defs.add("PRIMARY KEY (" + String.join(", ", key) + ")");
                    ddl.execute("CREATE TABLE " + table + " (" + String.join(", ", defs) + ")");
                    String marks = String.join(", ", java.util.Collections.nCopies(columns.size(), "?"));
                    try (Statement read = source.createStatement();
                         ResultSet rows = read.executeQuery("SELECT " + String.join(", ", columns) + " FROM " + table);
                         PreparedStatement write = target.prepareStatement(
                             "INSERT INTO " + table + " (" + String.join(", ", columns) + ") VALUES (" + marks + ")")) {
                        while (rows.next()) {
                            for (int i = 1; i <= columns.size(); i++) write.setObject(i, rows.getObject(i));
                            write.executeUpdate();
                        }
                    }
                    tables++;
                }
            }
            target.commit();
            System.out.println("metastore transaction tables created (" + tables + " tables from Hive's Derby DDL)");
        }
    }

    /** Derby's column types as the catalog database (Postgres) spells them. */
    static String postgresType(String derby, int size) {
        String t = derby.toUpperCase();
        if (t.contains("FOR BIT DATA") || t.equals("BLOB")) return "bytea";
        if (t.equals("CLOB")) return "text";
        if (t.equals("VARCHAR") || t.equals("CHAR")) return t.toLowerCase() + "(" + size + ")";
        if (t.equals("DOUBLE")) return "double precision";
        return t.toLowerCase();  // bigint, integer, smallint, timestamp
    }
}
