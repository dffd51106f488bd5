// The Hive 2.3.9 metastore (pyspark's own jars) serving Thrift on one address only.
//
// Hive 2.3 has no bind-host setting for the metastore (HiveMetaStore -p binds every interface), so the
// embedded stack starts the same handler behind a server socket bound to 127.0.0.1. Run with Java's
// single-file source launcher: java -cp "CONF_DIR:pyspark/jars/*:..." LoopbackMetastore.java HOST PORT [--init-txn]
// --init-txn (first start) also creates the lock/transaction tables Iceberg's commit lock needs:
// DataNucleus' autoCreateAll makes only the catalog schema.
import java.net.InetSocketAddress;
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
            TxnDbUtil.prepDb(conf);
            System.out.println("metastore transaction tables created");
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
}
